"""Benchmark: o16n's container create → agent ping against ``docker run --rm``, same run.

o16n sample: ``sandboxes.launch("probe")`` (create a hardened container, start it, wait
for its agent to dial in) followed by one ``ping`` round trip, with the project's own
``Sandboxes`` / ``LocalDockerBackend`` / ``DockerGateway``. Destroying the sandbox is not
in the sample (its time is reported separately, for information).

Baseline sample: ``docker run --rm --entrypoint true IMAGE`` through the docker CLI (CLI
start-up, create, start, wait for exit, and removal, since ``--rm`` waits for it).

Samples alternate between the two, N of each. Every container carries the label
``o16n.instance=o16n-bench`` and all of them are removed at the end, even on failure.

    .venv/bin/python -m bench.containers [--n 20] [--image TAG]

Writes bench/results/containers-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._server import PROJECT_ROOT, BenchError, git_commit, percentile, write_results
from controller.runtime.docker_gateway import DockerGateway
from controller.runtime.image import default_tag
from controller.runtime.local_docker import LocalDockerBackend
from controller.runtime.sandboxes import Sandboxes
from controller.settings import Settings

INSTANCE = "o16n-bench"
LABEL = f"o16n.instance={INSTANCE}"


# --- samples ------------------------------------------------------------------------------


async def o16n_sample(sandboxes: Sandboxes) -> tuple[float, float]:
    """Seconds for launch + ping, and (untimed in the ratio) seconds for destroy."""
    started = time.perf_counter()
    sandbox = await sandboxes.launch("probe")
    try:
        reply, _ = await sandbox.call("ping", timeout=10)
        elapsed = time.perf_counter() - started
        if reply.get("pong") is not True:
            raise BenchError(f"unexpected ping reply: {reply!r}")
    finally:
        destroy_started = time.perf_counter()
        await sandboxes.destroy(sandbox)
        destroy = time.perf_counter() - destroy_started
    return elapsed, destroy


async def docker_run_sample(image: str) -> float:
    cmd = ["docker", "run", "--rm", "--label", LABEL, "--entrypoint", "true", image]
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


# --- statistics ---------------------------------------------------------------------------


def summary(seconds: list[float]) -> dict[str, Any]:
    ms = [s * 1000 for s in seconds]
    return {
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "min_ms": min(ms),
        "max_ms": max(ms),
        "samples_ms": [round(v, 3) for v in ms],
    }


# --- run ----------------------------------------------------------------------------------


async def measure(args: argparse.Namespace, data_dir: Path, image: str) -> dict[str, Any]:
    settings = Settings.from_env({}, data_dir=data_dir, instance=INSTANCE, admin_password="x" * 12)
    gateway = await DockerGateway.connect()
    try:
        if not await gateway.image_exists(image):
            raise BenchError(
                f"runtime image {image} is missing: build it with `make image`, "
                "or name an existing one with --image"
            )
        backend = LocalDockerBackend(gateway, settings)
        sandboxes = Sandboxes(backend, settings, image)
        try:
            await sandboxes.reap(await sandboxes.owned())  # leftovers of an interrupted run
            for _ in range(args.warmup):  # page cache, image layers: not recorded
                await o16n_sample(sandboxes)
                await docker_run_sample(image)
            launch: list[float] = []
            destroy: list[float] = []
            baseline: list[float] = []
            for i in range(args.n):
                # alternate which goes first, so that drift hits both alike
                if i % 2 == 0:
                    elapsed, removed = await o16n_sample(sandboxes)
                    baseline.append(await docker_run_sample(image))
                else:
                    baseline.append(await docker_run_sample(image))
                    elapsed, removed = await o16n_sample(sandboxes)
                launch.append(elapsed)
                destroy.append(removed)
                print(
                    f"  {i + 1}/{args.n}: o16n {elapsed * 1000:.0f} ms, "
                    f"docker run {baseline[-1] * 1000:.0f} ms",
                    file=sys.stderr,
                    flush=True,
                )
        finally:
            await sandboxes.reap(await sandboxes.owned())
            await backend.close()
    finally:
        await gateway.close()
    return {
        "o16n_launch_ping": summary(launch),
        "docker_run_true": summary(baseline),
        "o16n_destroy": summary(destroy),
    }


def sweep(passes: int = 1) -> list[str]:
    """Last resort, outside the event loop: force-remove anything still labelled ours.

    After an interruption a create call may still be running on a Docker thread, so the
    caller asks for a second pass a moment later.
    """
    removed: list[str] = []
    for attempt in range(passes):
        if attempt:
            time.sleep(2)
        listed = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label={LABEL}"],
            capture_output=True,
            text=True,
            check=False,
        )
        ids = listed.stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)
            removed += ids
    return removed


# --- report -------------------------------------------------------------------------------


def report(figures: dict[str, Any], n: int, image: str) -> str:
    mine, base = figures["o16n_launch_ping"], figures["docker_run_true"]
    lines = [
        f"container create → agent ping vs `docker run --rm --entrypoint true` "
        f"(n={n}, {image}, {os.cpu_count()} cores)",
        f"{'':34}{'p50 ms':>10}{'p90 ms':>10}{'min ms':>10}",
    ]
    rows = [
        ("o16n launch + ping", mine),
        ("docker run --rm … true", base),
    ]
    for label, stats in rows:
        lines.append(
            f"{label:34}{stats['p50_ms']:10.1f}{stats['p90_ms']:10.1f}{stats['min_ms']:10.1f}"
        )
    ratio = figures["ratios"]
    lines.append(
        f"{'ratio o16n / baseline':34}{ratio['p50']:10.2f}{ratio['p90']:10.2f}{ratio['min']:10.2f}"
    )
    destroy = figures["o16n_destroy"]
    lines.append(
        f"{'(o16n destroy, not in the ratio)':34}"
        f"{destroy['p50_ms']:10.1f}{destroy['p90_ms']:10.1f}{destroy['min_ms']:10.1f}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20, help="samples of each (default 20)")
    parser.add_argument("--warmup", type=int, default=1, help="unrecorded samples of each first")
    parser.add_argument(
        "--image", help="runtime image (default: o16n-runtime:<hash of runtime_image/>)"
    )
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    if shutil.which("docker") is None:
        print("bench.containers: the docker CLI is not installed", file=sys.stderr)
        return 2
    image = args.image or default_tag()
    # SIGTERM ends the run like Ctrl-C does (asyncio cancels the run, cleanup happens)
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    # short on purpose: <data>/sockets/<key>/agent.sock must stay under 108 bytes
    data_dir = Path(tempfile.mkdtemp(prefix="o16n-b-", dir="/tmp"))
    completed = False
    try:
        figures = asyncio.run(measure(args, data_dir, image))
        completed = True
    except BenchError as exc:
        print(f"bench.containers: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench.containers: interrupted", file=sys.stderr)
        return 130
    finally:
        left = sweep(1 if completed else 2)
        if left:
            print(f"bench.containers: removed {len(left)} leftover container(s)", file=sys.stderr)
        shutil.rmtree(data_dir, ignore_errors=True)

    mine, base = figures["o16n_launch_ping"], figures["docker_run_true"]
    figures["ratios"] = {k: mine[f"{k}_ms"] / base[f"{k}_ms"] for k in ("p50", "p90", "min")}
    figures["meta"] = {
        "benchmark": "containers",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "n": args.n,
        "warmup": args.warmup,
        "image": image,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "git": git_commit(),
    }
    print(report(figures, args.n, image))
    print(f"results: {write_results('containers', figures).relative_to(PROJECT_ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
