"""The PostgreSQL cluster of a run on PostgreSQL (``tests.postgres_cluster``): it answers
the way apps reach it, gives each data directory a database of its own, and leaves nothing
behind, also when the run is interrupted or killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests import conftest
from tests.postgres_cluster import OS_USER, PostgresCluster, running_cluster

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    with running_cluster() as running:
        yield running


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (its parent has not reaped it yet) is gone as far as serving goes
    with Path(f"/proc/{pid}/stat").open() as stat:
        return stat.read().split(") ", 1)[1][0] != "Z"


def test_apps_reach_it_over_tcp_with_the_password_only(cluster: PostgresCluster) -> None:
    url = cluster.url("postgres")
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT inet_server_addr()::text, current_setting('fsync')").fetchone()
        assert row == ("127.0.0.1/32", "off")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(url.replace(cluster.password, "wrong")).close()
    if os.geteuid() == 0:
        assert cluster.root.owner() == OS_USER
        assert cluster.process is not None
        assert Path(f"/proc/{cluster.process.pid}").owner() == OS_USER


def test_each_data_directory_has_its_database_until_its_end(
    cluster: PostgresCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(conftest, "DATABASE", "postgres")
    monkeypatch.setattr(conftest, "_CLUSTER", cluster)
    monkeypatch.setattr(conftest, "_DATABASES", {})
    (tmp_path / "one" / "inner").mkdir(parents=True)
    (tmp_path / "two").mkdir()
    one = conftest.database_url(tmp_path / "one")
    assert one is not None
    assert conftest.database_url(tmp_path / "one") == one  # a restarted app finds its data
    inner = conftest.database_url(tmp_path / "one" / "inner")
    two = conftest.database_url(tmp_path / "two")
    assert inner is not None and two is not None
    assert len({one, inner, two}) == 3
    assert conftest.database_env(tmp_path / "two") == {"O16N_DATABASE_URL": two}
    with psycopg.connect(one) as conn:
        conn.execute("CREATE TABLE kept (x INTEGER)")
    assert len(cluster.databases()) == 3

    with psycopg.connect(inner):  # an app that did not close its pool does not stop a drop
        conftest.drop_databases(tmp_path / "one")
    assert cluster.databases() == {two.rsplit("/", 1)[1]}
    conftest.drop_databases(tmp_path / "two")
    assert cluster.databases() == set()


#: The run ``_interrupted_run`` interrupts: an app on its database first, requested the way
#: that has ``data_dir`` end before the app closes (the database must outlive the app and
#: then go), then a test that waits to be interrupted.
INTERRUPTED = """
import os, time
from pathlib import Path
from controller.app import create_app
from tests import conftest

async def test_an_app(aiohttp_client, data_dir):
    app = create_app(conftest.make_settings(data_dir))
    name = conftest.database_name(data_dir)

    async def closing(app):
        Path(os.environ["CLUSTER_FILE"] + ".db").write_text(
            str(name in conftest._CLUSTER.databases()))

    app.on_cleanup.append(closing)
    client = await aiohttp_client(app)
    assert (await client.post("/login", json={"username": "admin",
        "password": conftest.ADMIN_PASSWORD})).status == 200

def test_waits():
    cluster = conftest._CLUSTER
    assert Path(os.environ["CLUSTER_FILE"] + ".db").read_text() == "True"  # when it closed
    assert cluster.databases() == set()  # and then gone
    Path(os.environ["CLUSTER_FILE"]).write_text(f"{cluster.root} {cluster.process.pid}")
    time.sleep(120)
"""


def test_with_a_template_databases_are_its_copies_made_ahead(cluster: PostgresCluster) -> None:
    cluster.create_database("template_of_test")
    with psycopg.connect(cluster.url("template_of_test")) as conn:
        conn.execute("CREATE TABLE migrated (x INTEGER)")
    cluster.use_template("template_of_test", spares=1)
    deadline = time.monotonic() + 30
    while cluster._spares.empty():
        assert time.monotonic() < deadline, "no spare copy was made"
        time.sleep(0.05)
    started = time.monotonic()
    cluster.create_database("copied")
    assert time.monotonic() - started < 0.2  # a rename, not a copy
    assert cluster.databases() == {"copied"}  # neither the template nor the spares
    with psycopg.connect(cluster.url("copied")) as conn:
        assert conn.execute("SELECT count(*) FROM migrated").fetchone() == (0,)
    with pytest.raises(psycopg.OperationalError, match="not currently accepting connections"):
        psycopg.connect(cluster.url("template_of_test")).close()
    cluster.drop_database("copied")


def _interrupted_run(tmp_path: Path, stop: signal.Signals) -> tuple[Path, int]:
    """A pytest run on PostgreSQL (``INTERRUPTED``), ended by ``stop`` while its last test
    waits: its cluster's directory and postmaster pid."""
    (tmp_path / "test_waits.py").write_text(INTERRUPTED)
    said = tmp_path / "cluster"
    output = tmp_path / "output"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("O16N_")}
    with output.open("wb") as log:
        options = ["-c", str(ROOT / "pyproject.toml"), "-p", "tests.conftest"]
        options += ["-p", "no:cacheprovider", "-p", "no:xdist"]
        run = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", *options, str(tmp_path / "test_waits.py")],
            cwd=ROOT,
            env={
                **clean,
                "PYTHONPATH": f"{ROOT}:{ROOT / 'runtime_image'}",
                "O16N_TEST_DATABASE": "postgres",
                "CLUSTER_FILE": str(said),
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while not (said.exists() and said.read_text() and (tmp_path / "cluster.db").exists()):
            assert run.poll() is None, output.read_text()
            assert time.monotonic() < deadline, "the run did not start its test"
            time.sleep(0.1)
        run.send_signal(stop)
        run.wait(30)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    root, pid = said.read_text().split()
    return Path(root), int(pid)


def _gone(pid: int) -> bool:
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _alive(pid)


def test_a_ctrl_c_stops_the_cluster_and_removes_it(tmp_path: Path) -> None:
    root, pid = _interrupted_run(tmp_path, signal.SIGINT)
    assert _gone(pid)
    assert not root.exists()


def test_a_killed_run_takes_its_postmaster_along(tmp_path: Path) -> None:
    """No teardown runs after SIGKILL: the postmaster dies with its parent. Its directory
    and its System V shared memory segment (the one in its postmaster.pid) stay, harmless;
    this test removes them."""
    root, pid = _interrupted_run(tmp_path, signal.SIGKILL)
    segment = (root / "data" / "postmaster.pid").read_text().splitlines()[6].split()[1]
    try:
        assert _gone(pid)
    finally:
        if _alive(pid):  # only the one this test's run started
            os.kill(pid, signal.SIGKILL)
        subprocess.run(["ipcrm", "-m", segment], check=False)
        subprocess.run(["rm", "-rf", str(root)], check=True)
