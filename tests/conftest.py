"""Shared fixtures.

A test that needs a Docker engine and the runtime image of this tree is marked ``docker``
(a module marks all its tests with ``pytestmark = pytest.mark.docker``). Any other test's
apps run on the engine of the run (``ENGINE``): the real one when the run selected a test
marked ``docker`` (plain ``pytest``, ``make test``: everything against Docker), else the
fake engine (``controller.runtime.fake``), so ``pytest -m "not docker"`` never reaches
Docker; ``O16N_TEST_ENGINE=fake|docker`` chooses. Only a run on Docker checks the image
and sweeps Docker at its end.

Every test app gets its own data directory and a per-run ``instance`` label, so the
containers a test leaves behind are found and swept at the end of the run.

``O16N_TEST_DATABASE=postgres`` (default ``sqlite``) puts every test app's store in a
throw-away PostgreSQL 15 cluster (``tests.postgres_cluster``; one per xdist worker),
stopped at the end of the run: one database per data directory, so an app restarted on
its directory finds its data, dropped at the end of the test that made it (those of a
module's fixtures, with the cluster). Tests about SQLite itself are marked ``sqlite_only``
and skipped there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import docker
import psycopg
import pytest
from aiohttp.test_utils import TestClient
from argon2 import PasswordHasher

from controller.app import create_app
from controller.auth import passwords
from controller.runtime import fake
from controller.runtime.docker.image import default_tag
from controller.settings import Settings
from tests.postgres_cluster import PostgresCluster, database_name

RUN_ID = secrets.token_hex(3)
INSTANCE_PREFIX = "o16n-test-"
ADMIN_PASSWORD = "admin-" + secrets.token_urlsafe(12)
#: Every instance name this run's apps used: the end-of-run sweep removes exactly theirs.
INSTANCES: set[str] = set()


#: Whether a test ran on Docker: only then does the end-of-run sweep talk to Docker.
DOCKER_USED = False
#: The engine of the run's tests not marked ``docker`` (``pytest_collection_modifyitems``).
ENGINE = "fake"
#: The engine of the apps the running test makes (``make_settings``).
TEST_ENGINE = "fake"

#: The store of the run's apps: ``sqlite`` or ``postgres`` (``O16N_TEST_DATABASE``).
DATABASE = os.environ.get("O16N_TEST_DATABASE", "") or "sqlite"
#: The run's PostgreSQL cluster (``_postgres_cluster``).
_CLUSTER: PostgresCluster | None = None
#: The database every test's is a copy of (``_migrated_template``).
TEMPLATE = "o16n_template"
#: The databases made in it so far, each with the data directory it belongs to.
_DATABASES: dict[str, Path] = {}


def pytest_configure(config: pytest.Config) -> None:
    if DATABASE not in ("sqlite", "postgres"):
        raise pytest.UsageError(f"O16N_TEST_DATABASE={DATABASE!r}: sqlite or postgres")


@pytest.hookimpl(trylast=True)  # after ``-m`` and ``-k`` have deselected what they do
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    global ENGINE
    chosen = os.environ.get("O16N_TEST_ENGINE", "")
    if chosen not in ("", "fake", "docker"):
        raise pytest.UsageError(f"O16N_TEST_ENGINE={chosen!r}: fake or docker")
    on_docker = any(item.get_closest_marker("docker") is not None for item in items)
    ENGINE = chosen or ("docker" if on_docker else "fake")
    if DATABASE != "sqlite":
        skip = pytest.mark.skip(reason=f"about SQLite itself; this run is on {DATABASE}")
        for item in items:
            if item.get_closest_marker("sqlite_only") is not None:
                item.add_marker(skip)


def database_url(data_dir: Path) -> str | None:
    """The PostgreSQL database of the apps on ``data_dir`` in a run on PostgreSQL (made at
    its first use), None in one on SQLite: the app's own file then."""
    if DATABASE != "postgres":
        return None
    if _CLUSTER is None:
        raise RuntimeError("the run's PostgreSQL cluster is not running")
    directory = data_dir.resolve()
    name = database_name(directory)
    if name not in _DATABASES:
        _CLUSTER.create_database(name)
        _DATABASES[name] = directory
    return _CLUSTER.url(name)


def database_env(data_dir: Path) -> dict[str, str]:
    """``database_url`` for an ``o16n serve`` process: the environment that says it."""
    url = database_url(data_dir)
    return {} if url is None else {"O16N_DATABASE_URL": url}


def drop_databases(under: Path) -> None:
    """Drop the databases of ``under`` and of the directories inside it."""
    root = under.resolve()
    _drop([name for name, directory in _DATABASES.items() if directory.is_relative_to(root)])


def _drop(names: list[str]) -> None:
    if _CLUSTER is None:
        return
    for name in names:
        _CLUSTER.drop_database(name)
        del _DATABASES[name]


@pytest.fixture(autouse=True)
def _drop_the_tests_databases() -> Iterator[None]:
    """Drop the databases the test's apps made, once they are closed: an autouse fixture
    is set up before the test's others, so it is torn down after them (``data_dir``'s end
    comes before that of an ``aiohttp_client`` requested ahead of it). Those of wider
    fixtures (a module's live server) were made before and stay."""
    before = set(_DATABASES)
    yield
    _drop([name for name in _DATABASES if name not in before])


@contextlib.contextmanager
def write_lock_held(settings: Settings, seconds: float = 30.0) -> Iterator[None]:
    """Another connection (another process or controller, as far as the database can
    tell) holds the store's write lock until the block ends or ``seconds`` pass: SQLite's
    own, or on PostgreSQL the advisory lock every write transaction takes first."""
    if settings.database_url is not None:
        from controller.store.postgres import WRITE_LOCK

        url = settings.database_url.get_secret_value()
        with psycopg.connect(url) as conn:  # its transaction is open until the block ends
            conn.execute(f"SET idle_in_transaction_session_timeout = {int(seconds * 1000)}")
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            try:
                yield
            finally:
                with contextlib.suppress(psycopg.Error):  # gone after ``seconds``
                    conn.rollback()
        return
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(settings.db_path, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            held.set()
            release.wait(seconds)
            conn.execute("ROLLBACK")
        finally:
            conn.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert held.wait(5)
    try:
        yield
    finally:
        release.set()
        thread.join(10)


def _migrated_template(cluster: PostgresCluster) -> None:
    """Migrate one database the way an app does at its start, and make every test's
    database a copy of it: a test's app then starts on a current schema instead of
    running every migration (a quarter of a second each time). Migrating from nothing is
    still done, here, once per run."""
    from controller.store.db import open_database

    cluster.create_database(TEMPLATE)
    settings = Settings.from_env(
        {}, data_dir=cluster.root, database_url=cluster.url(TEMPLATE), admin_password=None
    )

    async def migrate() -> None:
        await (await open_database(settings)).close()

    asyncio.run(migrate())
    cluster.use_template(TEMPLATE)


@pytest.fixture(scope="session", autouse=True)
def _postgres_cluster() -> Iterator[None]:
    """The run's PostgreSQL cluster, in a run on PostgreSQL: started here, in the main
    thread (the postmaster dies with the thread that started it, so a killed run leaves no
    server behind), and stopped at the end of the run, also after a failure or a Ctrl-C
    (pytest tears the session's fixtures down then too)."""
    global _CLUSTER
    if DATABASE == "postgres":
        _CLUSTER = PostgresCluster().start()
    try:
        if _CLUSTER is not None:
            _migrated_template(_CLUSTER)
        yield
    finally:
        cluster, _CLUSTER = _CLUSTER, None
        _DATABASES.clear()
        if cluster is not None:
            cluster.stop()


@pytest.fixture(scope="session")
def runtime_image() -> None:
    """Stop at once, with the fix, when the runtime image of this tree was not built."""
    global DOCKER_USED
    DOCKER_USED = True
    tag = default_tag()
    client = docker.from_env()
    try:
        if not client.images.list(name=tag):
            pytest.exit(f"runtime image {tag} is missing: run `make image` (or `make test`)", 2)
    finally:
        client.close()


@pytest.fixture(autouse=True)
def _engine_of_the_test(request: pytest.FixtureRequest) -> None:
    """The engine of the test's apps: Docker for one marked ``docker`` (or in a run on
    Docker), with the image checked first; otherwise the fake one, and no Docker at all."""
    global TEST_ENGINE
    marked = request.node.get_closest_marker("docker") is not None
    TEST_ENGINE = "docker" if marked else ENGINE
    if TEST_ENGINE == "docker":
        request.getfixturevalue("runtime_image")


@pytest.fixture(scope="session", autouse=True)
def _cheap_password_hashing() -> Iterator[None]:
    """argon2id at its cheapest in the test process: every app start hashes the admin's
    password and every login verifies one, some 0.2 s of CPU each at the production cost,
    which made a good part of a Docker-free run. Hashes carry their parameters, so they
    verify the same; servers started as processes keep the production cost."""
    saved = passwords._hasher
    passwords._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    yield
    passwords._hasher = saved


@pytest.fixture(scope="session", autouse=True)
def _sweep_test_containers() -> Iterator[None]:
    """Remove every container and image this run's apps left behind, even after failures:
    those labelled with exactly one of the instances this run made, nothing else."""
    yield
    if not DOCKER_USED:
        return
    client = docker.from_env()
    try:
        # sparse: no inspect per container, which fails on one another run removes meanwhile
        owned = client.containers.list(all=True, sparse=True, filters={"label": "o16n.instance"})
        for container in owned:
            labels = container.attrs.get("Labels") or {}
            if labels.get("o16n.instance") in INSTANCES:
                try:
                    container.remove(force=True)
                except docker.errors.NotFound:
                    pass
                except docker.errors.APIError as exc:  # its app is removing it right now
                    if exc.status_code != 409:
                        raise
        for image in client.api.images(filters={"label": "o16n.instance"}):  # no inspect
            if (image.get("Labels") or {}).get("o16n.instance") in INSTANCES:
                for tag in image.get("RepoTags") or ():
                    if tag.startswith(("o16n-service:", "o16n-snapshot:")):
                        with contextlib.suppress(docker.errors.NotFound):
                            client.images.remove(tag, noprune=False)
    finally:
        client.close()


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Short on purpose: Unix socket paths (<data>/sockets/<key>/agent.sock) max out at 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="o16n-", dir="/tmp"))
    yield path
    # the fake engine's agents outlive their app, as containers do: end them, also those
    # of apps a test gave a directory inside this one
    for engine_dir in [path / fake.ROOT, *path.glob(f"*/{fake.ROOT}")]:
        fake.purge(engine_dir.parent)
    shutil.rmtree(path, ignore_errors=True)


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "admin_password": ADMIN_PASSWORD,
        "instance": f"{INSTANCE_PREFIX}{RUN_ID}-{secrets.token_hex(3)}",
        "log_format": "text",
        "engine": TEST_ENGINE,
    }
    if overrides.get("engine", TEST_ENGINE) == "fake":
        # No warm pools unless a test asks: on the fake engine they are four processes
        # importing the data stack per app start, most of the CPU of a Docker-free run,
        # and the tests run there are about something else.
        values.update(warm_pool_size=0, service_warm_pool_size=0)
    url = database_url(data_dir)
    if url is not None:
        values["database_url"] = url
    values.update(overrides)
    settings = Settings.from_env({}, **values)
    INSTANCES.add(settings.instance)
    return settings


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return make_settings(data_dir)


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    yield await aiohttp_client(create_app(settings))


async def login(
    client: TestClient[Any, Any], username: str = "admin", password: str = ADMIN_PASSWORD
) -> dict[str, Any]:
    resp = await client.post("/login", json={"username": username, "password": password})
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def admin_headers(client: TestClient[Any, Any]) -> dict[str, str]:
    return bearer((await login(client))["access_token"])


async def user_headers(
    client: TestClient[Any, Any],
    name: str,
    role: str = "Contributor",
    password: str = "password-123",
) -> dict[str, str]:
    """Add a user through the running app's own store, log in, return bearer headers."""
    from controller.auth.passwords import hash_password_async
    from controller.roles import Role
    from controller.store.db import DB
    from controller.store.users import UsersRepo

    await UsersRepo(client.app[DB]).add(name, await hash_password_async(password), Role.parse(role))
    return bearer((await login(client, name, password))["access_token"])
