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
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

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
    "log_min_error_statement": "panic",  # a test's expected errors are not news
}
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
            self.port = _free_port()
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
        self.admin().execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop_database(self, name: str) -> None:
        """Drop ``name``, ending the connections an app left open to it."""
        self.admin().execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def databases(self) -> set[str]:
        rows = self.admin().execute("SELECT datname FROM pg_database WHERE NOT datistemplate")
        return {str(row[0]) for row in rows} - {"postgres"}


@contextlib.contextmanager
def running_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()
