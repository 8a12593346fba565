"""A group of controllers as an operator runs one (docs/web-nodes.md, docs/haproxy.md): one
PostgreSQL database, ``o16n serve`` processes with their own data directories and instance
names sharing it, the shared directory and the JWT secret, and HAProxy in front of them
(tests/haproxy.py: docs/haproxy.cfg itself).

Every process here is a child of the test process, stopped at the end even on failure;
nothing else is touched.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import INSTANCE_PREFIX, INSTANCES, RUN_ID
from tests.haproxy import HAProxy
from tests.live_server import LiveServer, run_server
from tests.postgres_cluster import PostgresCluster


@dataclass
class Group:
    """Controllers by name (``web1``, ...) and the proxy in front of them."""

    controllers: dict[str, LiveServer]
    instances: dict[str, str]
    haproxy: HAProxy
    database_url: str

    @property
    def url(self) -> str:
        return self.haproxy.url

    @property
    def headers(self) -> dict[str, str]:
        """An admin's bearer: a token of one controller counts on every one."""
        return next(iter(self.controllers.values())).headers


@contextlib.contextmanager
def running_group(
    cluster: PostgresCluster,
    directory: Path,
    *,
    count: int = 2,
    engine: str = "docker",
    **settings: str,
) -> Iterator[Group]:
    """``count`` controllers on ``engine`` (``web1``, ...) in ``directory``, their database
    made in ``cluster``, HAProxy in front of them once every one is up in its checks;
    ``settings`` (``lease_seconds="3"``) go to every controller. Stopped, and the database
    dropped, however the block ends."""
    database = f"g_{RUN_ID}_{secrets.token_hex(4)}"
    shared = directory / "shared"
    shared.mkdir(parents=True)
    env = {
        "O16N_DATABASE_URL": cluster.url(database),
        "O16N_JWT_SECRET": secrets.token_urlsafe(32),
        "O16N_SHARED_DIR": str(shared),
        # HAProxy's X-Forwarded-For is believed (docs/haproxy.md)
        "O16N_TRUSTED_PROXIES": "127.0.0.1/32",
    }
    # one warm container each: two controllers share the machine
    pools = "1" if engine == "docker" else "0"
    defaults = {"warm_pool_size": pools, "service_warm_pool_size": "0"}
    with contextlib.ExitStack() as stack:
        cluster.create_database(database)
        stack.callback(cluster.drop_database, database)
        controllers: dict[str, LiveServer] = {}
        instances: dict[str, str] = {}
        for index in range(1, count + 1):  # one after the other: the first migrates
            name = f"web{index}"
            instance = f"{INSTANCE_PREFIX}{RUN_ID}-{name}-{secrets.token_hex(2)}"
            INSTANCES.add(instance)  # the run's sweep removes what a killed one left
            data_dir = directory / name
            data_dir.mkdir()
            server = contextlib.contextmanager(run_server)(
                engine=engine,
                data_dir=data_dir,
                env=env,
                **{**defaults, **settings, "instance": instance},
            )
            controllers[name], instances[name] = stack.enter_context(server), instance
        haproxy = HAProxy(
            directory, {name: c.url.removeprefix("http://") for name, c in controllers.items()}
        )
        stack.callback(haproxy.stop)
        haproxy.start()
        for name in controllers:
            haproxy.wait_status(name, "UP")
        yield Group(controllers, instances, haproxy, cluster.url(database))


def kill(server: LiveServer) -> None:
    """``kill -9`` one controller (its containers, in Docker, live on)."""
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(10)
