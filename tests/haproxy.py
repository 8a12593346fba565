"""HAProxy (Debian's package, ``scripts/ensure-haproxy.sh``) as a child process, run from
docs/haproxy.cfg itself with its servers, bind address, log and stats socket replaced, so
the tests and bench.webnodes exercise the configuration the docs give. ``HAProxy.stop`` ends
only the process it started; a killed run takes it along (its parent-death signal).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from bench._server import free_port

PROJECT = Path(__file__).resolve().parents[1]
DOCS_CONFIG = PROJECT / "docs" / "haproxy.cfg"
FRONTEND = "o16n"
BACKEND = "o16n_controllers"
START_TIMEOUT = 20.0
#: One request's line of the docs' log-format: ``%ci:%cp [%tr] %ft %b/%s %TR/...``.
_REQUEST_LINE = re.compile(rf"^\S+ \[[^\]]+\] {FRONTEND}~? {BACKEND}/(\S+) -?\d+/")


def haproxy_binary() -> str:
    """Debian's haproxy (``scripts/ensure-haproxy.sh`` installs it)."""
    found = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(found).exists():
        raise RuntimeError("haproxy is missing: run `bash scripts/ensure-haproxy.sh` (as root)")
    return found


def render_config(servers: Mapping[str, str], *, port: int, stats_socket: Path) -> str:
    """docs/haproxy.cfg for a child process: in the foreground as the caller's user (no
    chroot, user, group, daemon), its log on stdout, its stats socket at ``stats_socket``,
    listening on 127.0.0.1:``port``, and ``servers`` (name -> host:port) instead of the
    examples. Everything else is the docs' own."""
    out: list[str] = []
    replaced: set[str] = set()
    for line in DOCS_CONFIG.read_text().splitlines():
        words = line.split()
        key = words[0] if words else ""
        if key in ("chroot", "user", "group", "daemon"):
            continue
        if key == "log" and words[1:2] == ["/dev/log"]:
            line = "    log stdout format raw local0"
        elif words[:2] == ["stats", "socket"]:
            line = f"    stats socket {stats_socket} mode 600 level admin"
        elif key == "bind":
            line = f"    bind 127.0.0.1:{port}"
        elif key == "server":
            if "server" not in replaced:
                out += [f"    server {name} {address}" for name, address in servers.items()]
            replaced.add(key)
            continue
        else:
            out.append(line)
            continue
        replaced.add(key)
        out.append(line)
    missing = {"log", "stats", "bind", "server"} - replaced
    if missing:
        raise RuntimeError(f"{DOCS_CONFIG} no longer has the lines the tests replace: {missing}")
    return "\n".join(out) + "\n"


class HAProxy:
    """``haproxy -f <config> -db``, this process's child, in ``directory`` (its config,
    log and stats socket)."""

    def __init__(self, directory: Path, servers: Mapping[str, str]) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = directory / "haproxy.cfg"
        self.log = directory / "haproxy.log"
        self.stats_socket = directory / "haproxy.sock"
        self.config.write_text(
            render_config(servers, port=self.port, stats_socket=self.stats_socket)
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> HAProxy:
        """Start it and wait until it listens; stopped again if it does not."""
        argv = [haproxy_binary(), "-f", str(self.config), "-db"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                ["setpriv", "--pdeathsig=KILL", "--", *argv],  # a killed run takes it along
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.directory,
                start_new_session=True,  # a Ctrl-C of the run reaches pytest, not the proxy
            )
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"haproxy exited: {self.log_text()[-2000:]}")
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return self
                except OSError:
                    if time.monotonic() > deadline:
                        tail = self.log_text()[-2000:]
                        raise RuntimeError(f"haproxy did not listen: {tail}") from None
                    time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM (HAProxy's hard stop), SIGKILL if it does not go. Safe to call twice."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")
        return ""

    def served(self, at_least: int = 0, within: float = 5.0) -> list[str]:
        """The server of each request logged so far, in order (``<NOSRV>``: none), once
        ``at_least`` are (a request's line is written as it ends, after its answer)."""
        deadline = time.monotonic() + within
        while True:
            servers = [
                match[1]
                for line in self.log_text().splitlines()
                if (match := _REQUEST_LINE.match(line)) is not None
            ]
            if len(servers) >= at_least or time.monotonic() > deadline:
                return servers
            time.sleep(0.02)

    def command(self, text: str) -> str:
        """One command on the stats socket (``show stat``, ``disable server ...``)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.stats_socket))
            sock.sendall(text.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers(self) -> dict[str, dict[str, str]]:
        """``show stat`` of the backend's servers: name -> its columns (``status``,
        ``stot``, ``hrsp_5xx``, ...)."""
        lines = self.command("show stat").splitlines()
        head = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(head, line.split(","), strict=False)) for line in lines[1:] if line]
        return {
            row["svname"]: row
            for row in rows
            if row["pxname"] == BACKEND and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def wait_status(self, name: str, status: str, within: float = 30.0) -> float:
        """Seconds until server ``name``'s check status is ``status`` (``UP``, ``DOWN``)."""
        started = time.monotonic()
        while (seen := self.servers()[name]["status"]) != status:
            if time.monotonic() - started > within:
                raise TimeoutError(f"{name} is {seen}, not {status}, after {within} s")
            time.sleep(0.1)
        return time.monotonic() - started
