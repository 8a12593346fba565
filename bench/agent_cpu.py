"""The in-container agent's CPU per consume request: the measured tree's agent against a
baseline tree's agent (``--baseline-tree``), same run.

Both agents run in one container of the runtime image, each serving the Iris service
(bench/_agent_driver.py plays the controller over their Unix sockets, one request at a
time, as a service container's link carries them), in blocks of ``--block`` requests that
alternate between them, so that a noisy machine hits both alike. Reported: each agent's
CPU µs per request (``/proc`` schedstat, all its threads; median and lowest block) and
the median of the per-block ratios. ``--files`` puts that many files in the working
directory, which a service scans after every request.

    .venv/bin/python -m bench.agent_cpu --baseline-tree /work/before [--files 20]

Needs Docker and the runtime image; the container is labelled
``o16n.instance=o16n-bench-agent-cpu`` and removed however the run ends.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path
from typing import Any

from bench._bench import run_bench
from bench._server import BenchError, common_options, runtime_tag, say

LABEL = "o16n.instance=o16n-bench-agent-cpu"
DRIVER = Path(__file__).with_name("_agent_driver.py")


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    image = args.image or runtime_tag(args.tree)
    trees = {"baseline": args.baseline_tree, "o16n": args.tree}
    mounts = []
    for i, tree in enumerate(trees.values()):
        mounts += ["-v", f"{Path(tree).resolve() / 'runtime_image'}:/trees/{i}:ro"]
    cmd = [
        "docker", "run", "--rm", "--label", LABEL, "--tmpfs", "/dev/shm",
        "-v", f"{DRIVER}:/driver.py:ro", *mounts,
        "--entrypoint", "/opt/o16n/bin/python", image, "/driver.py",
        ",".join(f"/trees/{i}" for i in range(len(trees))),
        str(args.block), str(args.blocks), str(args.files),
    ]  # fmt: skip
    say(f"{args.blocks} blocks of {args.block} requests per agent, {args.files} file(s) ...")
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"the agents' driver failed:\n{done.stderr[-2000:]}")
    blocks = json.loads(done.stdout.strip().splitlines()[-1])["us_per_request"]
    figures: dict[str, Any] = {"image": image}
    for name, own in zip(trees, blocks, strict=True):
        figures[name] = {
            "median_us": statistics.median(own),
            "lowest_us": min(own),
            "blocks_us": own,
        }
    ratios = [o / b for b, o in zip(*blocks, strict=True)]
    figures["ratio_median"] = statistics.median(ratios)
    return figures


def summarise(figures: dict[str, Any], args: argparse.Namespace) -> str:
    base, o16n = figures["baseline"], figures["o16n"]
    return "\n".join(
        [
            f"agent CPU per Iris request ({args.files} file(s) in its working directory), "
            f"{args.blocks} alternating blocks of {args.block}",
            f"  {'':26}{'o16n':>10}{'baseline':>10}",
            f"  {'median of blocks (µs)':26}{o16n['median_us']:10.1f}{base['median_us']:10.1f}",
            f"  {'lowest block (µs)':26}{o16n['lowest_us']:10.1f}{base['lowest_us']:10.1f}",
            f"o16n/baseline, median of the per-block ratios: {figures['ratio_median']:.3f} "
            "(< 1: the measured tree's agent uses less CPU)",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--baseline-tree", type=Path, required=True, help="source tree of the baseline agent"
    )
    parser.add_argument("--block", type=int, default=100, help="requests per block (100)")
    parser.add_argument("--blocks", type=int, default=200, help="blocks per agent (200)")
    parser.add_argument("--files", type=int, default=0, help="files in the working directory")
    common_options(parser)
    args = parser.parse_args(argv)
    if min(args.block, args.blocks) < 1 or args.files < 0:
        parser.error("need --block, --blocks >= 1 and --files >= 0")
    return run_bench("agent_cpu", args, run, summarise, labels=[LABEL], tools=["docker"])


if __name__ == "__main__":
    raise SystemExit(main())
