"""Docker CLI calls the benchmark scripts share, and the check that a script can run here.

Through the CLI rather than an SDK: the containers' baseline sample *is* ``docker run``, and
the sweep at the end must work outside any event loop, after an interruption.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench._server import PROJECT_ROOT, BenchError


def docker_ids(*args: str) -> list[str]:
    """The whitespace-separated ids ``docker <args>`` prints (none if it fails)."""
    listed = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    return listed.stdout.split()


async def docker_run_sample(image: str, label: str) -> float:
    """Seconds of ``docker run --rm --label LABEL --entrypoint true IMAGE``: the CLI's
    start-up, create, start, wait for exit and, because of ``--rm``, the removal."""
    cmd = ["docker", "run", "--rm", "--label", label, "--entrypoint", "true", image]
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, stderr = await process.communicate()
    except asyncio.CancelledError:
        await process.wait()  # let the CLI finish: with --rm its container is then removed
        raise
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise BenchError(f"`{' '.join(cmd)}` failed ({process.returncode}): {stderr.decode()}")
    return elapsed


def sweep(script: str, labels: Sequence[str], passes: int = 1, *, images: bool = False) -> None:
    """Last resort, after the servers stopped: force-remove every container carrying one of
    ``labels`` (``key=value``), and with ``images`` every such image too; say so on stderr.

    After an interruption a container create may still be finishing in the engine, so the
    caller asks for a second pass a moment later."""
    containers: list[str] = []
    for attempt in range(passes):
        if attempt:
            time.sleep(2)
        for label in labels:
            ids = docker_ids("ps", "-aq", "--filter", f"label={label}")
            if ids:
                subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)
                containers += ids
    removed: list[str] = []
    if images:
        listed = [docker_ids("images", "-q", "--filter", f"label={label}") for label in labels]
        removed = sorted({image for ids in listed for image in ids})
        if removed:
            subprocess.run(["docker", "rmi", "-f", *removed], capture_output=True, check=False)
    if images and (containers or removed):
        print(
            f"bench.{script}: removed {len(containers)} container(s) and {len(removed)} "
            "image(s) left behind",
            file=sys.stderr,
        )
    elif containers:
        print(f"bench.{script}: removed {len(containers)} leftover container(s)", file=sys.stderr)


@contextlib.contextmanager
def scratch_dir(script: str, labels: Sequence[str], *, images: bool = False) -> Iterator[Path]:
    """A temporary directory for the run's servers, and the cleanup after it, however the run
    ends: ``sweep`` (a second pass if the run failed) and the directory removed.

    The path is short on purpose: ``<data>/sockets/<key>/agent.sock`` must stay under 108
    bytes. Ctrl-C is ignored while cleaning up, so a second one cannot leave containers."""
    tmp = Path(tempfile.mkdtemp(prefix="o16n-b-", dir="/tmp"))
    completed = False
    try:
        yield tmp
        completed = True
    finally:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            sweep(script, labels, 1 if completed else 2, images=images)
            shutil.rmtree(tmp, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)


def machine_load(label: str) -> dict[str, Any]:
    """The 1-minute load average and how many containers others are running (context):
    running containers that do not carry ``label``."""
    ours = set(docker_ids("ps", "-q", "--filter", f"label={label}"))
    others = [c for c in docker_ids("ps", "-q", "--filter", "status=running") if c not in ours]
    return {"load_1min": os.getloadavg()[0], "other_containers": len(others)}


def image_missing(image: str | None) -> str | None:
    """The runtime image the server will use, if it has not been built; None if present.
    Without ``image``, the one ``python -m controller image tag`` names (as the server's)."""
    if image is None:
        done = subprocess.run(
            [sys.executable, "-m", "controller", "image", "tag"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        image = done.stdout.strip()
    inspect = subprocess.run(
        ["docker", "image", "inspect", image], capture_output=True, check=False
    )
    return image if inspect.returncode != 0 else None


#: What to do about a tool that is not on PATH.
HINTS = {"docker": "make run sets up an engine", "wrk": "apt-get install -y wrk"}


def preflight(
    script: str, tools: Sequence[str], image: str | None = None, *, needs_image: bool = True
) -> int | None:
    """Before anything starts: exit code 2, with a hint on stderr, when one of ``tools`` is
    not installed or (with ``needs_image``) the runtime image ``image`` has not been built
    (``None``: the one the server would use); None when the script can run."""
    for tool in tools:
        if shutil.which(tool) is None:
            print(
                f"bench.{script}: `{tool}` is not installed ({HINTS.get(tool, 'not on PATH')})",
                file=sys.stderr,
            )
            return 2
    missing = image_missing(image) if needs_image else None
    if missing:
        print(
            f"bench.{script}: runtime image {missing} is missing: build it with "
            "`.venv/bin/python -m controller image build`, or name one with --image",
            file=sys.stderr,
        )
        return 2
    return None
