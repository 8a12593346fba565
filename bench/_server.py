"""Helpers the benchmark scripts share: processes, HTTP, statistics, results.

A benchmark starts ``python -m controller serve`` of a source tree (this one, or any
checkout given with ``--tree``: the before/after comparison) and, for its baseline, a small
app, as subprocesses on free ports with their output in log files, waits until they
listen, and at the end writes its figures to bench/results/<name>-<timestamp>.json. The
HTTP client is bench/_client.py, Docker CLI calls are in bench/_docker.py, wrk in
bench/_wrk.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from bench._procs import Stat, alive, kill_leftovers, tree

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = PROJECT_ROOT / "bench" / "results"
HOST = "127.0.0.1"


class BenchError(Exception):
    pass


# --- processes ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


#: Every server started in this process, for ``stop_servers``.
_STARTED: list[Server] = []


class Server:
    """A server subprocess with its output in a log file.

    With ``detach`` it runs in a session of its own, so that Ctrl-C in the terminal reaches
    only the benchmark, which can then still use the server to clean up before stopping it;
    ``stop`` then signals its whole process group. Processes it spawned that outlive it
    (workers in sessions of their own) are killed.
    """

    def __init__(
        self,
        name: str,
        cmd: list[str],
        env: dict[str, str],
        port: int,
        log: Path,
        *,
        cwd: Path = PROJECT_ROOT,
        detach: bool = False,
    ) -> None:
        self.name = name
        self.port = port
        self.log = log
        self.url = f"http://{HOST}:{port}"
        self.detach = detach
        #: The server's process tree as last seen alive (detached: by ``check_alive``),
        #: for ``stop`` to end what it leaves behind even if it died first.
        self.seen: list[Stat] = []
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                cmd,
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=detach,
            )
        _STARTED.append(self)

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the server listens (aiohttp binds its port once its start-up is done)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                socket.create_connection((HOST, self.port), timeout=2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise BenchError(f"{self.name} did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(
                f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
            )
        if self.detach:  # what stop() ends if it dies first (a /proc scan: not for the
            self.seen = tree(self.pid)  # servers polled in a tight loop, as o16n's is)

    def stop(self, timeout: float = 20) -> None:
        """SIGINT (aiohttp's and uvicorn's graceful shutdown) to the server, or to its
        process group if detached; SIGKILL after ``timeout`` s; then SIGKILL whatever of
        its tree outlived it (if the server died first: of its tree as last seen)."""
        if self.process.poll() is None:
            self.seen = tree(self.pid)
            with contextlib.suppress(ProcessLookupError):
                if self.detach:
                    os.killpg(self.pid, signal.SIGINT)
                else:
                    self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            deadline = time.monotonic() + 5  # a worker's own graceful exit, briefly
            while any(alive(s) for s in self.seen[1:]) and time.monotonic() < deadline:
                time.sleep(0.1)
        if killed := kill_leftovers(self.seen[1:]):
            say(f"{self.name}: killed {killed} process(es) it left behind")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def stop_servers() -> None:
    """Stop every server this process started that still runs: the last resort after an
    error or Ctrl-C, before the containers are swept."""
    while _STARTED:
        _STARTED.pop().stop()


def say(text: str) -> None:
    """Progress, on stderr (the report goes to stdout)."""
    print(f"  {text}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 if it is gone, as an agent in a
    container may be). A server subprocess that died stays in /proc until
    ``Server.check_alive`` or ``Server.stop`` reaps it, so for a server it is never the 0."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def interrupt_on_sigterm() -> None:
    """SIGTERM ends the run like Ctrl-C does (KeyboardInterrupt where the bench is), so
    that its cleanup happens."""
    signal.signal(signal.SIGTERM, _keyboard_interrupt)


def failed(script: str, exc: BenchError | KeyboardInterrupt) -> int:
    """Say on stderr why the run stopped; its exit code: 130 after Ctrl-C (or SIGTERM),
    1 after a ``BenchError``."""
    if isinstance(exc, KeyboardInterrupt):
        print(f"bench.{script}: interrupted", file=sys.stderr)
        return 130
    print(f"bench.{script}: {exc}", file=sys.stderr)
    return 1


def tree_python(tree: Path) -> str:
    """The tree's own virtualenv's Python, else ours (the shared virtualenv)."""
    own = tree / ".venv" / "bin" / "python"
    return str(own) if own.exists() else sys.executable


def tree_env(tree: Path) -> dict[str, str]:
    """Our environment with the tree's packages first on the import path."""
    return {**os.environ, "PYTHONPATH": f"{tree}:{tree / 'runtime_image'}"}


def runtime_tag(tree: Path) -> str:
    """The runtime image the tree's server uses by default (``python -m controller image
    tag`` of that tree)."""
    done = subprocess.run(
        [tree_python(tree), "-m", "controller", "image", "tag"],
        cwd=tree,
        env=tree_env(tree),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise BenchError(f"`python -m controller image tag` failed in {tree}: {done.stderr}")
    return done.stdout.strip()


def start_o16n(
    tmp: Path,
    password: str,
    image: str | None,
    *,
    instance: str,
    tree: Path = PROJECT_ROOT,
    name: str = "o16n",
    env: dict[str, str] | None = None,
    port: int | None = None,
    detach: bool = False,
) -> Server:
    """``python -m controller serve`` of ``tree`` on a free port, data in ``tmp/<name>``
    (keep ``tmp`` short: agent socket paths live under it), access log off, log level
    WARNING. A ``port`` given is reused (a restart)."""
    port = port or free_port()
    environ = tree_env(tree)
    if image:
        environ["O16N_RUNTIME_IMAGE"] = image
    environ.update(
        {
            "O16N_DATA_DIR": str(tmp / name),
            "O16N_HOST": HOST,
            "O16N_PORT": str(port),
            "O16N_ADMIN_PASSWORD": password,
            "O16N_INSTANCE": instance,
            "O16N_ACCESS_LOG": "false",
            "O16N_LOG_LEVEL": "WARNING",
        }
    )
    environ.update(env or {})
    cmd = [tree_python(tree), "-m", "controller", "serve"]
    return Server(name, cmd, environ, port, tmp / f"{name}.log", cwd=tree, detach=detach)


def start_app(tmp: Path, name: str, source: str, *, detach: bool = False) -> Server:
    """A Python program given as source, started with ``HOST PORT`` as its arguments."""
    port = free_port()
    cmd = [sys.executable, "-c", source, HOST, str(port)]
    return Server(name, cmd, dict(os.environ), port, tmp / f"{name}.log", detach=detach)


def common_options(parser: argparse.ArgumentParser) -> None:
    """``--tree``, ``--image`` and ``--results``, which every bench takes."""
    parser.add_argument(
        "--tree",
        type=Path,
        default=PROJECT_ROOT,
        help="source tree whose server is measured (default: this one)",
    )
    parser.add_argument(
        "--image", help="O16N_RUNTIME_IMAGE for the server (default: the tree's own tag)"
    )
    parser.add_argument(
        "--results", type=Path, help="where to write the figures (default: bench/results/)"
    )


# --- statistics and results ---------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(seconds: list[float]) -> dict[str, Any]:
    """p50, p90, min and max in milliseconds of samples given in seconds, and the samples."""
    ms = [s * 1000 for s in seconds]
    return {
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "min_ms": min(ms),
        "max_ms": max(ms),
        "samples_ms": [round(v, 3) for v in ms],
    }


def table(head: str, rows: list[tuple[str, float, float]], width: int = 38) -> list[str]:
    """Report lines: o16n, baseline and o16n / baseline for each row, under ``head``."""
    lines = [f"{head:{width}}{'o16n':>11}{'baseline':>11}{'o16n/base':>11}"]
    for label, mine, theirs in rows:
        ratio = f"{mine / theirs:11.2f}" if theirs else f"{'-':>11}"
        lines.append(f"  {label:{width - 2}}{mine:11.3f}{theirs:11.3f}{ratio}")
    return lines


def git_commit(tree: Path = PROJECT_ROOT) -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=tree,
        capture_output=True,
        check=False,
    )
    return done.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def run_meta(benchmark: str, args: argparse.Namespace, **fields: Any) -> dict[str, Any]:
    """A run's ``meta`` figures: which benchmark, when, its options and ``fields``, and on
    what: cores, Python, the measured tree and its commit."""
    options = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    return {
        "benchmark": benchmark,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "options": options,
        **fields,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "tree": str(args.tree),
        "git": git_commit(args.tree),
    }


def finish(name: str, figures: dict[str, Any], report: str, path: Path | None = None) -> int:
    """Print the report, write the figures (to ``path`` if given), say where; exit code 0."""
    print(report)
    print(f"results: {write_results(name, figures, path)}")
    return 0


def write_results(name: str, figures: dict[str, Any], path: Path | None = None) -> Path:
    if path is None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = RESULTS_DIR / f"{name}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2) + "\n")
    return path
