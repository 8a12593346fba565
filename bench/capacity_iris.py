"""The capacity report of the seed's Iris service: ``o16n admin capacity`` run against it.

Starts a server (instance ``o16n-bench-capacity``, service pools of ``--pool-initial`` /
``--pool-max``), publishes Iris through the API (bench/_iris.py), waits until its pool is
warm, then runs the admin CLI's ``capacity`` command as a subprocess, as an operator
would, stepping the concurrency (``--steps``, default 1,2,4,8,16) until the p95 passes
``--p95-threshold``; it writes the HTML report and the command's JSON (default
docs/capacity-iris.html and docs/capacity-iris.json).

    .venv/bin/python -m bench.capacity_iris [--duration 5] [--warmup 2] [--steps 1,2,4,8,16]

Every container and image labelled ``o16n.instance=o16n-bench-capacity`` is removed at the
end, also after an error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import _iris as iris
from bench._bench import run_bench
from bench._client import Api
from bench._docker import machine_line, machine_load
from bench._server import PROJECT_ROOT, BenchError, common_options, say, start_o16n

INSTANCE = "o16n-bench-capacity"
LABEL = f"o16n.instance={INSTANCE}"
VERSION = "V1.0"
DOCS = PROJECT_ROOT / "docs"


def capacity(url: str, token: str, args: argparse.Namespace) -> dict[str, Any]:
    """``o16n admin capacity`` of this tree's client against ``url``; its JSON report."""
    cmd = [
        sys.executable,
        "-m",
        "o16n_client.admin",
        "capacity",
        iris.SERVICE,
        VERSION,
        "--server",
        url,
        "--input",
        json.dumps(iris.INPUT),
        "--step",
        args.steps,
        "--duration",
        f"{args.duration}s",
        "--warmup",
        f"{args.warmup}s",
        "--p95-threshold",
        args.p95_threshold,
        "--html",
        str(args.html),
        "--json",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("O16N_")}
    env |= {"O16N_TOKEN": token, "PYTHONPATH": f"{PROJECT_ROOT}:{PROJECT_ROOT / 'runtime_image'}"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"o16n admin capacity exited {done.returncode}: {done.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {"machine_at_start": machine_load(LABEL)}
    password = "bench-" + secrets.token_urlsafe(18)
    pools = {
        "O16N_SERVICE_POOL_INITIAL": str(args.pool_initial),
        "O16N_SERVICE_POOL_MAX": str(args.pool_max),
    }
    o16n = start_o16n(tmp, password, args.image, instance=INSTANCE, tree=args.tree, env=pools)
    try:
        o16n.wait_ready()
        api = Api(o16n.url).login(password)
        say("Iris session, executes, snapshot ...")
        snapshot_id, figures["setup"] = iris.snapshot(api)
        figures["publish"] = iris.publish(api, o16n, snapshot_id, VERSION)
        iris.wait_pool(api, VERSION, args.pool_initial)
        say(f"o16n admin capacity, steps {args.steps}, {args.warmup}+{args.duration} s each ...")
        figures["capacity"] = capacity(o16n.url, api.token or "", args)
        o16n.check_alive()
        figures["pool_after"] = api.ok("GET", f"/services/{iris.SERVICE}/{VERSION}/pool")[0]
        figures["machine_at_end"] = machine_load(LABEL)
        api.ok("DELETE", f"/services/{iris.SERVICE}/{VERSION}")
        api.ok("DELETE", f"/snapshots/{snapshot_id}")
        return figures
    finally:
        o16n.stop()


def summarise(figures: dict[str, Any], args: argparse.Namespace) -> str:
    report = figures["capacity"]
    lines = [
        f"POST /api/Iris/{VERSION} (pool {args.pool_initial}/{args.pool_max}), "
        f"{args.warmup} s warm-up + {args.duration} s per step",
        f"{'clients':>8}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}  not ok",
    ]
    for step in report["steps"]:
        lat = {k: "-" if v is None else f"{v:.2f}" for k, v in step["latencyMs"].items()}
        lines.append(  # a step nothing answered has no latencies (null in the JSON)
            f"{step['concurrency']:>8}{step['requestsPerSecond']:>9.1f}{lat['p50']:>9}"
            f"{lat['p95']:>9}{lat['p99']:>9}  "
            f"{step['requests'] - step['outcomes'].get('ok', 0)}"
        )
    lines.append(report["verdict"])
    if not any(step["phasesMs"] for step in report["steps"]):
        lines.append("no Server-Timing header in the answers: no per-phase breakdown")
    lines.append(machine_line(figures["machine_at_start"], figures["machine_at_end"]))
    args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    lines.append(f"report: {args.html}, figures: {args.json_out}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds counted per step (5)")
    parser.add_argument("--warmup", type=int, default=2, help="uncounted seconds per step (2)")
    parser.add_argument("--steps", default="1,2,4,8,16", help="concurrency steps (1,2,4,8,16)")
    parser.add_argument("--p95-threshold", default="50ms", help="stop past this p95 (50ms)")
    parser.add_argument("--pool-initial", type=int, default=2, help="InitialPoolSize (2)")
    parser.add_argument("--pool-max", type=int, default=2, help="MaxPoolSize (2)")
    parser.add_argument("--html", type=Path, default=DOCS / "capacity-iris.html")
    parser.add_argument("--json-out", type=Path, default=DOCS / "capacity-iris.json")
    common_options(parser)
    args = parser.parse_args(argv)
    if args.duration < 1 or args.warmup < 0:
        parser.error("need --duration >= 1 and --warmup >= 0")
    if args.pool_initial < 1 or args.pool_max < args.pool_initial:
        parser.error("need 1 <= --pool-initial <= --pool-max")
    return run_bench("capacity_iris", args, run, summarise, labels=[LABEL], images=True)


if __name__ == "__main__":
    raise SystemExit(main())
