"""Helpers the benchmark scripts share: processes, HTTP, statistics, results.

A benchmark starts ``python -m controller serve`` (and, for its baseline, a small app) as
subprocesses on free ports with their output in log files, waits until they answer, logs
in as admin, and at the end writes its figures to bench/results/<name>-<timestamp>.json.
Docker CLI calls are in bench/_docker.py, running wrk in bench/_wrk.py.
"""

from __future__ import annotations

import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType
from typing import Any

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


class Server:
    """A server subprocess with its output in a log file.

    With ``detach`` it runs in a session of its own, so that Ctrl-C in the terminal reaches
    only the benchmark, which can then still use the server to clean up before stopping it.
    """

    def __init__(
        self,
        name: str,
        cmd: list[str],
        env: dict[str, str],
        port: int,
        log: Path,
        *,
        detach: bool = False,
    ) -> None:
        self.name = name
        self.port = port
        self.log = log
        self.url = f"http://{HOST}:{port}"
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                cmd,
                env=env,
                cwd=PROJECT_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=detach,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = 60.0, path: str = "/status") -> None:
        """Until the server answers HTTP at all (o16n answers 401 without a token)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(f"{self.url}{path}", timeout=2):
                    return
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.1)
        raise BenchError(f"{self.name} did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(
                f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # aiohttp's graceful shutdown
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


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


def interrupt_on_sigterm(*, asyncio_run: bool = False) -> None:
    """SIGTERM ends the run like Ctrl-C does, so that the script's cleanup happens.

    With ``asyncio_run`` it is turned into a SIGINT, which ``asyncio.run`` answers by
    cancelling the run; otherwise KeyboardInterrupt is raised where the script is."""
    if asyncio_run:
        signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    else:
        signal.signal(signal.SIGTERM, _keyboard_interrupt)


def failed(script: str, exc: BenchError | KeyboardInterrupt) -> int:
    """Say on stderr why the run stopped; its exit code: 130 after Ctrl-C (or SIGTERM, see
    ``interrupt_on_sigterm``), 1 after a ``BenchError``."""
    if isinstance(exc, KeyboardInterrupt):
        print(f"bench.{script}: interrupted", file=sys.stderr)
        return 130
    print(f"bench.{script}: {exc}", file=sys.stderr)
    return 1


def start_o16n(
    tmp: Path,
    password: str,
    image: str | None,
    *,
    instance: str,
    name: str = "o16n",
    env: dict[str, str] | None = None,
    detach: bool = False,
) -> Server:
    """``python -m controller serve`` on a free port, data in ``tmp/<name>`` (keep ``tmp``
    short: agent socket paths live under it), access log off, log level WARNING."""
    port = free_port()
    environ = dict(os.environ)
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
    cmd = [sys.executable, "-m", "controller", "serve"]
    return Server(name, cmd, environ, port, tmp / f"{name}.log", detach=detach)


def start_app(tmp: Path, name: str, source: str, *, detach: bool = False) -> Server:
    """A Python program given as source, started with ``HOST PORT`` as its arguments."""
    port = free_port()
    cmd = [sys.executable, "-c", source, HOST, str(port)]
    return Server(name, cmd, dict(os.environ), port, tmp / f"{name}.log", detach=detach)


# --- HTTP ---------------------------------------------------------------------------------


def http_json(url: str, body: Any = None, token: str | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise BenchError(f"{url}: HTTP {exc.code}: {exc.read()[:300]!r}") from None
    except OSError as exc:
        raise BenchError(f"{url}: {exc}") from None


def login(server: Server, password: str) -> str:
    reply = http_json(f"{server.url}/login", {"username": "admin", "password": password})
    return str(reply["access_token"])


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


def git_commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain"], cwd=PROJECT_ROOT, capture_output=True, check=False
    )
    return done.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def run_meta(benchmark: str, **fields: Any) -> dict[str, Any]:
    """A run's ``meta`` figures: which benchmark, when, ``fields`` (its settings), and on
    what: cores, Python, commit."""
    return {
        "benchmark": benchmark,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **fields,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "git": git_commit(),
    }


def finish(name: str, figures: dict[str, Any], report: str) -> int:
    """Print the report, write the figures, say where; the exit code (0)."""
    print(report)
    print(f"results: {write_results(name, figures).relative_to(PROJECT_ROOT)}")
    return 0


def write_results(name: str, figures: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = RESULTS_DIR / f"{name}-{stamp}.json"
    path.write_text(json.dumps(figures, indent=2) + "\n")
    return path
