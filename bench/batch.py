"""Benchmark of batch consumption (``POST /api/Iris/V1.0/batch``) against sequential consume
calls of the same rows from one client, same run, same server.

Starts a server (instance ``o16n-bench-batch``, service pools of ``--pool-initial`` /
``--pool-max``), publishes Iris through the API (bench/_iris.py), warms both paths up, waits
until the instance's containers are idle, then measures:

1. sequential: ``--sequential`` calls of ``POST /api/Iris/V1.0`` one after another on one
   keep-alive connection, every answer checked;
2. batch: ``--rows`` records in one ``POST .../batch?parallelCount=--parallel``, polled with
   ``showPartialResults=false`` until ``Complete``; every result checked.

Both cycle through six real iris measurements. Reports rows/s of each and batch /
sequential, the time to the 202, and CPU per row of the controller and the containers.

    .venv/bin/python -m bench.batch [--rows 10000] [--parallel 2] [--sequential 2000] [--tree DIR]

Every container and image labelled ``o16n.instance=o16n-bench-batch`` is removed at the
end, also after an error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import time
from pathlib import Path
from typing import Any

from bench import _iris as iris
from bench._bench import run_bench
from bench._client import Api, load
from bench._docker import containers_cpu, instance_containers, machine_line, machine_load
from bench._server import BenchError, Server, common_options, cpu_seconds, say, start_o16n

INSTANCE = "o16n-bench-batch"
LABEL = f"o16n.instance={INSTANCE}"
PATH = f"/api/{iris.SERVICE}/V1.0"


def sequential(api: Api, server: Server, calls: int, ids: list[str]) -> dict[str, Any]:
    """``calls`` consume requests one after another; every answer checked."""
    bodies = [json.dumps(iris.record(i), separators=(",", ":")).encode() for i in range(6)]
    cpu, client, in_containers = cpu_seconds(server.pid), time.process_time(), containers_cpu(ids)
    figures = load(
        [api],
        lambda _, i: (PATH, bodies[i % len(bodies)]),
        lambda i, raw: iris.answer_ok(json.loads(raw), i),
        requests=calls,
    )
    figures["rows_per_s"] = figures.pop("rps")
    figures["controller_cpu_us_per_row"] = (cpu_seconds(server.pid) - cpu) / calls * 1e6
    figures["client_cpu_us_per_row"] = (time.process_time() - client) / calls * 1e6
    if (after := containers_cpu(ids)) is not None and in_containers is not None and ids:
        figures["containers_cpu_us_per_row"] = (after - in_containers) / calls * 1e6
    return figures


def batch(api: Api, server: Server, rows: int, args: argparse.Namespace, ids: list[str]) -> Any:
    """POST ``rows`` records, poll until Complete, check every result; the execution is
    deleted afterwards (stopped, if it failed)."""
    body = json.dumps([iris.record(i) for i in range(rows)], separators=(",", ":")).encode()
    cpu_start, in_containers = cpu_seconds(server.pid), containers_cpu(ids)
    started = time.perf_counter()
    status, raw = api.send("POST", f"{PATH}/batch?parallelCount={args.parallel}", body)
    accepted, cpu_accepted = time.perf_counter(), cpu_seconds(server.pid)
    answer = json.loads(raw) if status == 202 else {}
    if "batchExecutionId" not in answer:
        raise BenchError(f"POST {PATH}/batch: HTTP {status}: {raw[:400]!r}")
    batch_id = str(answer["batchExecutionId"])
    try:
        progress: list[tuple[float, int]] = []  # (seconds since the 202, completedItemCount)
        while True:
            time.sleep(args.poll_interval)
            state = api.ok("GET", f"{PATH}/batch/{batch_id}?showPartialResults=false")
            now, count = time.perf_counter(), int(state.get("completedItemCount", -1))
            progress.append((now - accepted, count))
            if state.get("state") == "Complete":
                break
            moved = next(t for t, n in progress if n == count)  # this count first seen
            if state.get("state") not in ("Pending", "InProgress") or (
                now - accepted - moved > args.stall_timeout
            ):
                raise BenchError(
                    f"batch {batch_id} at {count}/{rows}: {str(state)[:300]}:\n{server.log_tail()}"
                )
            server.check_alive()
        cpu_end, after = cpu_seconds(server.pid), containers_cpu(ids)
    finally:
        with contextlib.suppress(BenchError):  # the server may be gone after a Ctrl-C
            api.call("DELETE", f"{PATH}/batch/{batch_id}")
    results = state.get("batchExecutionResults") or []
    bad = [i for i, result in enumerate(results) if not iris.answer_ok(result, i)]
    if len(results) != rows or bad or state.get("totalItemCount") != rows:
        raise BenchError(f"batch {batch_id}: {len(results)} results, {len(bad)} wrong, of {rows}")
    figures: dict[str, Any] = {
        "rows": rows,
        "post_to_202_s": accepted - started,
        "seconds": now - accepted,
        "rows_per_s": rows / (now - accepted),
        "rows_per_s_incl_post": rows / (now - started),
        "polls": len(progress),
        "controller_cpu_us_per_row_storing": (cpu_accepted - cpu_start) / rows * 1e6,
        "controller_cpu_us_per_row_running": (cpu_end - cpu_accepted) / rows * 1e6,
        "controller_cpu_us_per_row": (cpu_end - cpu_start) / rows * 1e6,
    }
    if after is not None and in_containers is not None and ids:
        figures["containers_cpu_us_per_row"] = (after - in_containers) / rows * 1e6
    low = next(((t, n) for t, n in progress if n >= rows * 0.1), None)
    high = next(((t, n) for t, n in progress if n >= rows * 0.9), None)
    if low and high and high[0] > low[0]:  # the steady part, start and end excluded
        figures["rows_per_s_10_to_90pct"] = (high[1] - low[1]) / (high[0] - low[0])
    return figures


def wait_idle(ids: list[str], timeout: float = 120) -> float | None:
    """Until the containers together use under 2 % of a core over a second (nothing is
    still starting), so that the CPU measured next is the load's; seconds waited or None."""
    started, before = time.monotonic(), containers_cpu(ids)
    while before is not None and time.monotonic() - started < timeout:
        time.sleep(1)
        if (after := containers_cpu(ids)) is None or after - before < 0.02:
            return None if after is None else time.monotonic() - started
        before = after
    return None


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {"machine_at_start": machine_load(LABEL)}
    password = "bench-" + secrets.token_urlsafe(18)
    pools = {"O16N_SERVICE_POOL_INITIAL": str(args.pool_initial)}
    pools["O16N_SERVICE_POOL_MAX"] = str(args.pool_max)
    o16n = start_o16n(tmp, password, args.image, instance=INSTANCE, tree=args.tree, env=pools)
    try:
        o16n.wait_ready()
        api = Api(o16n.url).login(password)
        say("Iris session, executes, snapshot, publish ...")
        snapshot_id, figures["setup"] = iris.snapshot(api)
        figures["publish"] = iris.publish(api, o16n, snapshot_id, "V1.0")
        api.ok("DELETE", f"/snapshots/{snapshot_id}")
        iris.wait_pool(api, "V1.0", args.pool_initial)
        say("warm-up ...")
        if args.warmup:
            sequential(api, o16n, args.warmup, [])
        if args.warmup_rows:
            batch(api, o16n, args.warmup_rows, args, [])
        # a pool that may grow grew in the warm-up batch: let its new containers start first
        grown = max(min(args.pool_max, args.parallel), args.pool_initial)
        figures["pool_grown_before_runs"] = iris.wait_pool(api, "V1.0", grown, fatal=False)
        ids = instance_containers(LABEL)
        figures["containers"] = len(ids)
        figures["containers_idle_after_s"] = wait_idle(ids)
        say(f"sequential: {args.sequential} calls ...")
        figures["sequential"] = sequential(api, o16n, args.sequential, ids)
        say(f"batch: {args.rows} rows, parallelCount {args.parallel} ...")
        figures["batch"] = batch(api, o16n, args.rows, args, ids)
        figures["containers_changed"] = set(instance_containers(LABEL)) != set(ids)
        figures["machine_at_end"] = machine_load(LABEL)
        api.ok("DELETE", f"/services/{iris.SERVICE}/V1.0")  # its containers and image go
        return figures
    finally:
        o16n.stop()


def summarise(figures: dict[str, Any], args: argparse.Namespace) -> str:
    """The ratio into ``figures``; the report."""
    seq, bat = figures["sequential"], figures["batch"]
    figures["ratio"] = bat["rows_per_s"] / seq["rows_per_s"]
    figures["ratios"] = {"batch_vs_sequential_rps": figures["ratio"]}
    lines = [
        f"Iris/V1.0: a batch of {args.rows} rows (parallelCount {args.parallel}) vs "
        f"{args.sequential} sequential calls; pool {args.pool_initial}/{args.pool_max}",
        f"{'':34}{'batch':>11}{'sequential':>11}{'batch/seq':>11}",
    ]
    for label, key in (
        ("rows/s", "rows_per_s"),
        ("controller CPU/row (µs)", "controller_cpu_us_per_row"),
        ("containers CPU/row (µs)", "containers_cpu_us_per_row"),
    ):
        if key in bat and key in seq:
            lines.append(f"  {label:32}{bat[key]:11.1f}{seq[key]:11.1f}{bat[key] / seq[key]:11.2f}")
    lines.append(f"RATIO batch rows/s / sequential rows/s: {figures['ratio']:.2f}")
    lines.append(
        f"batch: POST → 202 {bat['post_to_202_s'] * 1000:.0f} ms (controller CPU "
        f"{bat['controller_cpu_us_per_row_storing']:.1f} µs/row storing, "
        f"{bat['controller_cpu_us_per_row_running']:.1f} running); 202 → Complete "
        f"{bat['seconds']:.2f} s; {bat['rows_per_s_incl_post']:.0f} rows/s with the POST"
        + (
            f", {bat['rows_per_s_10_to_90pct']:.0f} from 10 % to 90 % done"
            if "rows_per_s_10_to_90pct" in bat
            else ""
        )
    )
    lines.append(
        f"sequential: p50 {seq['p50_ms']:.3f} ms, p90 {seq['p90_ms']:.3f} ms, p99 "
        f"{seq['p99_ms']:.3f} ms; client CPU {seq['client_cpu_us_per_row']:.0f} µs/call"
    )
    idle = figures["containers_idle_after_s"]
    lines.append(
        f"containers: {figures['containers']} of the instance, "
        + (f"idle {idle:.0f} s after the warm-up" if idle is not None else "NOT idle before")
        + ("; CHANGED during the runs" if figures["containers_changed"] else "")
    )
    setup = ", ".join(f"{k.removesuffix('_s')} {v:.2f}" for k, v in figures["setup"].items())
    lines.append(f"setup (s): {setup}, first consume {figures['publish']['first_consume_s']:.2f}")
    lines.append(machine_line(figures["machine_at_start"], figures["machine_at_end"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10000, help="records in the batch (10000)")
    parser.add_argument("--parallel", type=int, default=2, help="parallelCount (2)")
    parser.add_argument("--sequential", type=int, default=2000, help="consume calls (2000)")
    parser.add_argument("--warmup", type=int, default=200, help="sequential calls first (200)")
    parser.add_argument("--warmup-rows", type=int, default=200, help="warm-up batch rows (200)")
    parser.add_argument("--pool-initial", type=int, default=2, help="InitialPoolSize (2)")
    parser.add_argument("--pool-max", type=int, default=2, help="MaxPoolSize (2)")
    parser.add_argument("--poll-interval", type=float, default=0.05, help="s between polls")
    parser.add_argument("--stall-timeout", type=float, default=120, help="s without progress")
    common_options(parser)
    args = parser.parse_args(argv)
    if min(args.rows, args.parallel, args.sequential) < 1 or min(args.warmup, args.warmup_rows) < 0:
        parser.error("--rows, --parallel, --sequential must be >= 1, the warm-ups >= 0")
    if args.pool_initial < 1 or args.pool_max < args.pool_initial:
        parser.error("need 1 <= --pool-initial <= --pool-max")
    if args.poll_interval <= 0 or args.stall_timeout <= 0:
        parser.error("--poll-interval and --stall-timeout must be > 0")
    return run_bench("batch", args, run, summarise, labels=[LABEL], images=True)


if __name__ == "__main__":
    raise SystemExit(main())
