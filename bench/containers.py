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
import sys
import time
from pathlib import Path
from typing import Any

from bench._docker import docker_run_sample, preflight, scratch_dir
from bench._server import (
    BenchError,
    failed,
    finish,
    interrupt_on_sigterm,
    run_meta,
    summary,
)
from controller.runtime import agent_bundle
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


# --- run ----------------------------------------------------------------------------------


async def measure(args: argparse.Namespace, data_dir: Path, image: str) -> dict[str, Any]:
    settings = Settings.from_env({}, data_dir=data_dir, instance=INSTANCE, admin_password="x" * 12)
    gateway = await DockerGateway.connect()
    try:
        backend = LocalDockerBackend(gateway, settings)
        sandboxes = Sandboxes(backend, settings, image, agent_bundle.stage(data_dir))
        try:
            await sandboxes.reap(await sandboxes.owned())  # leftovers of an interrupted run
            for _ in range(args.warmup):  # page cache, image layers: not recorded
                await o16n_sample(sandboxes)
                await docker_run_sample(image, LABEL)
            launch: list[float] = []
            destroy: list[float] = []
            baseline: list[float] = []
            for i in range(args.n):
                # alternate which goes first, so that drift hits both alike
                if i % 2 == 0:
                    elapsed, removed = await o16n_sample(sandboxes)
                    baseline.append(await docker_run_sample(image, LABEL))
                else:
                    baseline.append(await docker_run_sample(image, LABEL))
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
    image = args.image or default_tag()
    if (unable := preflight("containers", ["docker"], image)) is not None:
        return unable
    interrupt_on_sigterm(asyncio_run=True)
    try:
        with scratch_dir("containers", [LABEL]) as data_dir:
            figures = asyncio.run(measure(args, data_dir, image))
    except (BenchError, KeyboardInterrupt) as exc:
        return failed("containers", exc)

    mine, base = figures["o16n_launch_ping"], figures["docker_run_true"]
    figures["ratios"] = {k: mine[f"{k}_ms"] / base[f"{k}_ms"] for k in ("p50", "p90", "min")}
    figures["meta"] = run_meta(
        "containers",
        n=args.n,
        warmup=args.warmup,
        image=image,
    )
    return finish("containers", figures, report(figures, args.n, image))


if __name__ == "__main__":
    raise SystemExit(main())
