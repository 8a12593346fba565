"""Before/after comparison of two source trees on this machine, with the run-to-run noise.

Runs the benches (default: consume and sessions) against the server of ``--before`` and of
``--after``, interleaved A, B, A, B (``--rounds`` times each), so that a drift of the
machine shows up as noise rather than as a difference. Each run writes its own results
file; from them, for every figure a bench reports as a same-run ratio against its baseline
(``ratios``) or as an absolute figure without one (``absolute``):

    change = after / before   (geometric means of each tree's runs)
    noise  = the largest run-to-run spread of one tree (max / min - 1, over both trees)

and a verdict: worse beyond the noise, within it, or better beyond it (for requests/s a
lower figure is worse, for everything else a higher one).

    .venv/bin/python -m bench.compare --before ../bench-before --after . [--rounds 2]
        [--benches consume,sessions] [--consume-args "..."] [--sessions-args "..."]

Each tree is started as ``<tree>/.venv/bin/python -m controller serve`` (or this Python
with the tree first on PYTHONPATH), and uses its own runtime image (``python -m controller
image tag`` in the tree), which must have been built. Writes
bench/results/compare-<timestamp>.json, and every run's figures and report in
bench/results/compare-<timestamp>/. A verdict is information, not a pass/fail: the exit
code is 0 whenever every run completed.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench._server import PROJECT_ROOT, RESULTS_DIR, write_results

#: Counts that keep a whole comparison (2 rounds of consume and sessions) near 10 minutes
#: on a 2-core machine; each is the bench's own option, overridable with --<bench>-args.
DEFAULT_ARGS = {
    "consume": "--n 3 --duration 5 --warmup 2 --predict-calls 200 --no-frameworks",
    "sessions": "--n 10 --requests 1000 --warmup-requests 100 --duration 3",
    "batch": "--rows 3000 --sequential 1000 --warmup 100 --warmup-rows 100",
    "idle": "--idle 10",
    "status": "--duration 5 --warmup 1",
}


def run_one(bench: str, tree: Path, extra: list[str], out: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", f"bench.{bench}", "--tree", str(tree), "--results", str(out)]
    print(f"== bench.{bench} on {tree}", file=sys.stderr, flush=True)
    started = time.monotonic()
    with out.with_suffix(".txt").open("wb") as report:  # the bench's report, kept
        child = subprocess.Popen([*cmd, *extra], cwd=PROJECT_ROOT, stdout=report)
    forward = signal.signal(signal.SIGTERM, lambda signum, _: child.send_signal(signum))
    try:
        code = child.wait()
    except KeyboardInterrupt:  # Ctrl-C reached the bench too: let it clean up
        child.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, forward)
    if code != 0:
        raise SystemExit(f"bench.compare: bench.{bench} on {tree} failed with exit code {code}")
    print(f"   {time.monotonic() - started:.0f} s, {out}", file=sys.stderr, flush=True)
    figures: dict[str, Any] = json.loads(out.read_text())
    return {
        **{f"ratio {k}": v for k, v in figures.get("ratios", {}).items()},
        **{k: v for k, v in figures.get("absolute", {}).items()},
    }


def gmean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if min(values) > 0 else math.nan


def spread(values: list[float]) -> float:
    """Run-to-run noise of one tree's runs: max / min - 1."""
    return max(values) / min(values) - 1 if len(values) > 1 and min(values) > 0 else math.nan


def verdicts(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    rows = []
    for bench, trees in runs.items():
        for key in trees["before"][0]:
            before = [r[key] for r in trees["before"] if key in r]
            after = [r[key] for r in trees["after"] if key in r]
            if not before or not after:
                continue
            change = gmean(after) / gmean(before)
            noise = max(spread(before), spread(after))
            worse = change < 1 - noise if "rps" in key else change > 1 + noise
            better = change > 1 + noise if "rps" in key else change < 1 - noise
            rows.append(
                {
                    "bench": bench,
                    "figure": key,
                    "before": before,
                    "after": after,
                    "change": change,
                    "noise_before": spread(before),
                    "noise_after": spread(after),
                    "noise": noise,
                    "verdict": "WORSE" if worse else "better" if better else "within noise",
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="tree A (e.g. main)")
    parser.add_argument("--after", type=Path, required=True, help="tree B (e.g. this one)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each bench per tree (2)")
    parser.add_argument("--benches", default="consume,sessions", help="comma-separated")
    for bench, default in DEFAULT_ARGS.items():
        parser.add_argument(f"--{bench}-args", default=default, help=f"({default})")
    args = parser.parse_args(argv)
    benches = [b for b in args.benches.split(",") if b]
    if unknown := [b for b in benches if b not in DEFAULT_ARGS]:
        parser.error(f"unknown benches {unknown}; known: {', '.join(DEFAULT_ARGS)}")
    if args.rounds < 2:
        parser.error("--rounds must be at least 2: the noise is the spread between rounds")
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    for tree in trees.values():
        if not (tree / "controller").is_dir():
            parser.error(f"{tree} is not an o16n source tree")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder = RESULTS_DIR / f"compare-{stamp}"
    folder.mkdir(parents=True)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        bench: {"before": [], "after": []} for bench in benches
    }
    started = time.monotonic()
    try:
        for round_ in range(args.rounds):
            for bench in benches:  # A, B, A, B: drift shows up as noise, not as change
                extra = shlex.split(getattr(args, f"{bench}_args"))
                for side, tree in trees.items():
                    out = folder / f"{bench}-{side}-{round_ + 1}.json"
                    runs[bench][side].append(run_one(bench, tree, extra, out))
    except KeyboardInterrupt:
        print("bench.compare: interrupted", file=sys.stderr)
        return 130
    rows = verdicts(runs)
    lines = [
        f"after / before: {trees['after']} vs {trees['before']}, {args.rounds} runs each, "
        f"interleaved; {time.monotonic() - started:.0f} s",
        f"{'figure':46}{'before':>10}{'after':>10}{'change':>9}{'noise A':>9}{'noise B':>9}"
        "  verdict",
    ]
    for row in rows:
        lines.append(
            f"{row['bench'] + ' ' + row['figure']:46}{gmean(row['before']):10.3f}"
            f"{gmean(row['after']):10.3f}{row['change']:9.3f}{row['noise_before']:9.1%}"
            f"{row['noise_after']:9.1%}  {row['verdict']}"
        )
    lines.append(
        "before/after: geometric means of the runs' figures (ratios: o16n / the same run's "
        "baseline); change = after / before; noise A / B: the spread of each tree's runs "
        "(max/min - 1); a verdict needs the change beyond the larger of the two"
    )
    print("\n".join(lines))
    meta = {
        "time": stamp,
        "trees": {k: str(v) for k, v in trees.items()},
        "rounds": args.rounds,
        "args": {b: getattr(args, f"{b}_args") for b in benches},
        "runs": str(folder),
    }
    path = write_results("compare", {"meta": meta, "figures": rows}, folder.with_suffix(".json"))
    print(f"results: {path} (every run's in {folder})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
