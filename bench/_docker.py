"""Docker CLI calls the benchmark scripts share, and the check that a script can run here.

Docker is never used to drive the server, only for baselines (``docker run``), to read what
an instance's containers use (found by the ``o16n.instance`` label ``O16N_INSTANCE`` sets)
and to sweep them at the end. Through the CLI rather than an SDK: the baseline *is* ``docker
run``, and the sweep must work outside any event loop, after an interruption.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from bench._server import PROJECT_ROOT, BenchError, runtime_tag


def docker_ids(*args: str) -> list[str]:
    """The whitespace-separated ids ``docker <args>`` prints (none if it fails)."""
    listed = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    return listed.stdout.split()


def docker_run_sample(image: str, label: str) -> float:
    """Seconds of ``docker run --rm --label LABEL --entrypoint true IMAGE``: the CLI's
    start-up, create, start, wait for exit and, because of ``--rm``, the removal."""
    cmd = ["docker", "run", "--rm", "--label", label, "--entrypoint", "true", image]
    started = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchError(f"`{' '.join(cmd)}` failed ({done.returncode}): {done.stderr.decode()}")
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


def instance_containers(label: str) -> list[str]:
    """Full ids of the running containers carrying ``label`` (``o16n.instance=...``)."""
    return docker_ids("ps", "-q", "--no-trunc", "--filter", f"label={label}")


def wait_settled(expected: dict[str, int], settle: float, timeout: float = 120) -> None:
    """Until, for each ``label: count``, exactly ``count`` containers carrying the label
    are running, each for ``settle`` seconds at least, and none is being created, started
    or removed (exited ones do not count): nothing starts or stops while a sample runs. A
    pool's container is handed out once its agent has dialled in, well within a second."""
    deadline = time.monotonic() + timeout
    seen: dict[str, list[str]] = {}
    while time.monotonic() < deadline:
        youngest, ready = 0.0, True
        for label, count in expected.items():
            ids = docker_ids("ps", "-aq", "--filter", f"label={label}")
            states = docker_ids(
                "inspect", "--format", "{{.State.Status}}/{{.State.StartedAt}}", *ids
            )
            live = [s for s in states if s.split("/")[0] not in ("exited", "dead")]
            seen[label] = [s.split("/")[0] for s in live]
            ready = ready and len(states) == len(ids) and len(live) == count
            for state in live:
                status, _, started = state.partition("/")
                ready = ready and status == "running"
                youngest = max(youngest, datetime.fromisoformat(started).timestamp())
        if ready and time.time() - youngest >= settle:
            return
        time.sleep(0.1 if not ready else max(0.05, youngest + settle - time.time()))
    raise BenchError(
        f"the containers did not settle within {timeout:.0f} s: want {expected}, saw {seen}"
    )


def containers_cpu(ids: list[str]) -> float | None:
    """CPU seconds the given containers used so far, from their cgroups (v1 or v2); None
    when one of them cannot be read."""
    total = 0.0
    for cid in ids:
        v1 = Path(f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage")
        v2 = [
            Path(f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat"),
            Path(f"/sys/fs/cgroup/docker/{cid}/cpu.stat"),
        ]
        if v1.exists():
            total += int(v1.read_text()) / 1e9
            continue
        for path in v2:
            if path.exists():
                for line in path.read_text().splitlines():
                    if line.startswith("usage_usec "):
                        total += int(line.split()[1]) / 1e6
                break
        else:
            return None
    return total


def wait_containers_idle(label: str, timeout: float = 60, cores: float = 0.02) -> float | None:
    """Until the running containers carrying ``label`` stayed the same for a second and
    together used under ``cores`` of a core over it: nothing of the instance is starting
    (a warm pool refilling imports its modules first). Seconds waited, or None when that
    did not happen within ``timeout`` or their CPU cannot be read."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        ids = instance_containers(label)
        before = containers_cpu(ids)
        time.sleep(1)
        after = containers_cpu(ids)
        if instance_containers(label) != ids:
            continue  # one came or went (a removed one's CPU is unreadable): not idle yet
        if before is None or after is None:
            return None
        if after - before < cores:
            return time.monotonic() - started
    return None


def machine_line(start: dict[str, Any], end: dict[str, Any]) -> str:
    """``machine_load`` at the start and end of a run, for the report."""
    return (
        f"machine: load average {start['load_1min']:.2f} at start, {end['load_1min']:.2f} at "
        f"end; {start['other_containers']} / {end['other_containers']} containers of others"
    )


def image_missing(image: str | None, tree: Path = PROJECT_ROOT) -> str | None:
    """The runtime image the server will use, if it has not been built; None if present.
    Without ``image``, the one the tree's ``python -m controller image tag`` names."""
    image = image or runtime_tag(tree)
    inspect = subprocess.run(
        ["docker", "image", "inspect", image], capture_output=True, check=False
    )
    return image if inspect.returncode != 0 else None


#: What to do about a tool that is not on PATH.
HINTS = {"docker": "make run sets up an engine", "wrk": "apt-get install -y wrk"}


def preflight(
    script: str,
    tools: Sequence[str],
    image: str | None = None,
    tree: Path = PROJECT_ROOT,
    *,
    needs_image: bool = True,
) -> int | None:
    """Before anything starts: exit code 2, with a hint on stderr, when one of ``tools`` is
    not installed or (with ``needs_image``) the runtime image ``image`` has not been built
    (``None``: the one the tree's server would use); None when the script can run."""
    for tool in tools:
        if shutil.which(tool) is None:
            print(
                f"bench.{script}: `{tool}` is not installed ({HINTS.get(tool, 'not on PATH')})",
                file=sys.stderr,
            )
            return 2
    try:
        missing = image_missing(image, tree) if needs_image else None
    except BenchError as exc:
        print(f"bench.{script}: {exc}", file=sys.stderr)
        return 2
    if missing:
        print(
            f"bench.{script}: runtime image {missing} is missing: build it with "
            f"`python -m controller image build` in {tree}, or name one with --image",
            file=sys.stderr,
        )
        return 2
    return None
