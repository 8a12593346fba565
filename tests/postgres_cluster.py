"""A throw-away PostgreSQL 15 cluster for a test run: Debian's server binaries, started as
the ``postgres`` user (PostgreSQL refuses to run as root) in a temporary directory, on a free
TCP port of 127.0.0.1 with a generated superuser password, durability off (a test's data
need not survive a crash). Apps get a TCP URL with that password, the production path; the
test process administers it over the Unix socket in the same directory (trust).

``PostgresCluster.start()`` / ``stop()``, or ``with running_cluster() as cluster:``. Stopping
ends only the postmaster this object started and removes only its own directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import queue
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench._server import free_port

BIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "postgres"
SUPERUSER = "o16n_test"
#: Settings for speed: nothing a test run needs survives the run, so no flush ever matters.
CONFIG = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_connections": "300",  # one pool per app, and tests run several apps at once
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
    "log_min_error_statement": "error",  # with the statement: a store's error to look into
}
#: The names of the copies ``use_template`` makes ahead, until one is renamed for a test.
SPARE_PREFIX = "spare_"
#: An environment variable: where to copy the server's log (``<path>.<pid>``) at the end.
KEEP_LOG = "O16N_TEST_POSTGRES_LOG"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


def database_name(data_dir: Path) -> str:
    """The database of the apps on ``data_dir``: the same name for the same directory, so an
    app restarted on it finds its data."""
    return "t_" + hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:24]


class PostgresCluster:
    """One postmaster in one directory, owned by ``postgres``, this process's child."""

    def __init__(self) -> None:
        if not (BIN / "initdb").exists():
            raise RuntimeError(
                f"{BIN}/initdb is missing: run `bash scripts/ensure-postgres.sh` (as root)"
            )
        self.password = secrets.token_urlsafe(18)
        self.root = Path(tempfile.mkdtemp(prefix="o16n-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._admin: psycopg.Connection[tuple[object, ...]] | None = None
        self._template: str | None = None
        self._spares: queue.Queue[str] = queue.Queue()
        self._spare_count = 0
        self._wanted = threading.Event()
        self._stopping = threading.Event()
        self._maker: threading.Thread | None = None

    # --- the process ----------------------------------------------------------------------

    def _as_postgres(self) -> list[str]:
        """The prefix that runs a command as ``postgres``. ``setpriv`` execs in place (the
        child is the postmaster itself, so its pid is ours to signal), and the parent-death
        signal is armed after the uid change, so a killed test run takes its postmaster along
        instead of leaving it to serve an orphaned directory."""
        if os.geteuid() != 0:
            return []  # already an ordinary user: run as oneself
        return [
            "setpriv",
            f"--reuid={OS_USER}",
            f"--regid={OS_USER}",
            "--init-groups",
            "--pdeathsig=KILL",
            "--",
        ]

    def _run(self, *argv: str) -> None:
        done = subprocess.run(
            [*self._as_postgres(), *argv],
            capture_output=True,
            text=True,
            cwd=self.root,
            env=self._env(),
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()}")

    def _env(self) -> dict[str, str]:
        keep = ("PATH", "LANG", "LC_ALL", "TZ")
        return {
            **{k: v for k, v in os.environ.items() if k in keep},
            "HOME": str(self.root),
            "LC_ALL": "C.UTF-8",
        }

    def start(self) -> PostgresCluster:
        """initdb, then the postmaster on a free port; stops and removes all on failure."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        if os.geteuid() == 0:
            account = pwd.getpwnam(OS_USER)
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self.sockets.mkdir(mode=0o700)
            os.chown(self.sockets, account.pw_uid, account.pw_gid)
        else:
            self.sockets.mkdir(mode=0o700)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        pwfile.chmod(0o600)
        self._run(
            str(BIN / "initdb"),
            f"--pgdata={self.data}",
            f"--username={SUPERUSER}",
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )
        pwfile.unlink()
        for _ in range(5):  # another process may take the free port before the postmaster
            self.port = free_port()
            if self._launch():
                return
        raise RuntimeError(f"PostgreSQL did not start: {self._log_tail()}")

    def _launch(self) -> bool:
        """Start the postmaster; False when it exited at once (its port was taken)."""
        options = {
            **CONFIG,
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.sockets),
        }
        argv = [str(BIN / "postgres"), "-D", str(self.data)]
        for name, value in options.items():
            argv += ["-c", f"{name}={value}"]
        log = (self.root / "postgres.log").open("ab")
        with log:
            self.process = subprocess.Popen(
                [*self._as_postgres(), *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.root,
                env=self._env(),
                start_new_session=True,  # a Ctrl-C of the run reaches pytest, not the server
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                return False
            try:
                self._admin = psycopg.connect(self._socket_conninfo(), autocommit=True)
                return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        raise RuntimeError(f"PostgreSQL did not answer in {START_TIMEOUT} s: {self._log_tail()}")

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.root / "postgres.log").read_text(errors="replace")[-2000:]
        return "(no log)"

    def stop(self) -> None:
        """Immediate shutdown of this cluster's postmaster (nothing is worth flushing),
        SIGKILL when it does not go, then the directory. Safe to call twice."""
        self._stopping.set()
        self._wanted.set()
        if self._maker is not None:
            self._maker.join(STOP_TIMEOUT)  # a copy under way ends first
            self._maker = None
        if self._admin is not None:
            with contextlib.suppress(psycopg.Error):
                self._admin.close()
            self._admin = None
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(subprocess.SubprocessError, RuntimeError, OSError):
                self._run(str(BIN / "pg_ctl"), "stop", "-D", str(self.data), "-m", "immediate")
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                # the postmaster's own process group (start_new_session): its backends too
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(STOP_TIMEOUT)
        keep = os.environ.get(KEEP_LOG)
        if keep:  # the server's errors, for a run that wants to read them
            with contextlib.suppress(OSError):
                shutil.copyfile(self.root / "postgres.log", f"{keep}.{os.getpid()}")
        shutil.rmtree(self.root, ignore_errors=True)

    # --- databases ------------------------------------------------------------------------

    def _socket_conninfo(self) -> str:
        return make_conninfo(
            host=str(self.sockets), port=self.port, user=SUPERUSER, dbname="postgres"
        )

    def url(self, dbname: str) -> str:
        """What an app is given: TCP with the password, as in production."""
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{dbname}"

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._admin is None:
            raise RuntimeError("the cluster is not running")
        return self._admin

    def create_database(self, name: str) -> None:
        """An empty database, or with ``use_template`` a copy of the template: a spare made
        ahead renamed (milliseconds), else a copy made now."""
        if self._template is not None:
            with contextlib.suppress(queue.Empty):
                spare = self._spares.get_nowait()
                self._wanted.set()
                self.admin().execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(spare), sql.Identifier(name)
                    )
                )
                return
        self.admin().execute(self._create(name))

    def _create(self, name: str) -> sql.Composed:
        if self._template is None:
            return sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        return sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(self._template)
        )

    def use_template(self, name: str, spares: int = 2) -> None:
        """Make every database from now on a copy of ``name`` (a migrated schema, say: an
        app then skips its migrations), closed to connections so it stays as it is; keep
        ``spares`` copies made ahead by a thread, so a test does not wait for its copy
        (0.2 to 0.5 s each)."""
        self.admin().execute(
            sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(
                sql.Identifier(name)
            )
        )
        self._template = name
        if spares > 0:
            self._spare_count = spares
            self._maker = threading.Thread(target=self._make_spares, name="pg-spares", daemon=True)
            self._maker.start()

    def _make_spares(self) -> None:
        """Keep ``_spare_count`` copies of the template ready, on a connection of its own,
        until ``stop``. A failure only leaves the test to make its own copy."""
        try:
            with psycopg.connect(self._socket_conninfo(), autocommit=True) as conn:
                while not self._stopping.is_set():
                    if self._spares.qsize() >= self._spare_count:
                        self._wanted.wait(1.0)
                        self._wanted.clear()
                        continue
                    name = SPARE_PREFIX + secrets.token_hex(6)
                    conn.execute(self._create(name))
                    self._spares.put(name)
        except psycopg.Error:
            return

    def drop_database(self, name: str) -> None:
        """Drop ``name``, ending the connections an app left open to it."""
        self.admin().execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def databases(self) -> set[str]:
        """The databases made with ``create_database`` and not dropped."""
        rows = self.admin().execute("SELECT datname FROM pg_database WHERE NOT datistemplate")
        names = {str(row[0]) for row in rows} - {"postgres"}
        return {name for name in names if not name.startswith(SPARE_PREFIX)}


@contextlib.contextmanager
def running_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()
