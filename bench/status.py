"""Benchmark of authenticated ``GET /status`` against a bare aiohttp baseline, same run.

Starts its own o16n server (``python -m controller serve``, fresh data dir, free port,
random admin password), logs in, and drives ``GET /status`` with ``wrk``: p50 latency at
concurrency 1 and requests/s at concurrency 16. The same loads are run against a minimal
aiohttp app (a subprocess answering ``GET /status`` with a small JSON body) and figures are
reported as ratios o16n / baseline, with each server's CPU per request (from /proc) and a
PASS/MISS line for the target (requests/s at the rps run's concurrency >= ``TARGET`` x the
baseline). /status reuses its checks for ``O16N_STATUS_CACHE_SECONDS`` (1 s by default), so
the load measures the HTTP stack, the token check and the handler, plus one set of checks
(SQLite ping, disk, engine) a second.

    .venv/bin/python -m bench.status [--duration 10] [--threads 1] [--tree DIR]

Needs ``wrk`` (``apt-get install -y wrk``). Writes bench/results/status-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import os
import secrets
from pathlib import Path
from typing import Any

from bench._bench import run_bench
from bench._client import Api
from bench._docker import machine_line, machine_load
from bench._server import (
    BenchError,
    Server,
    common_options,
    cpu_seconds,
    say,
    start_app,
    start_o16n,
)
from bench._wrk import write_script, wrk, wrk_version

INSTANCE = "o16n-bench"
LABEL = f"o16n.instance={INSTANCE}"
#: The target of issue 14: o16n's requests/s at the rps run's concurrency over the baseline's.
TARGET = 0.5

#: The baseline: the smallest aiohttp app answering GET /status with a small JSON body.
BASELINE_APP = """
import sys
from aiohttp import web

BODY = b'{"statusCode":"pass","components":{},"details":{"version":"baseline"}}'


async def status(request):
    return web.Response(body=BODY, content_type="application/json")


app = web.Application()
app.router.add_get("/status", status)
web.run_app(app, host=sys.argv[1], port=int(sys.argv[2]), access_log=None, print=None)
"""

# --- report -------------------------------------------------------------------------------


def report(figures: dict[str, Any], args: argparse.Namespace) -> str:
    """Ratios into ``figures``; the report."""
    o16n, base = figures["o16n"], figures["baseline"]
    figures["ratios"] = {
        "p50_latency_c1": o16n["c1"]["p50_us"] / base["c1"]["p50_us"],
        "rps_cN": o16n["cN"]["rps"] / base["cN"]["rps"],
    }
    rows = [
        ("p50 latency, c=1 (ms)", o16n["c1"]["p50_us"] / 1000, base["c1"]["p50_us"] / 1000),
        ("p90 latency, c=1 (ms)", o16n["c1"]["p90_us"] / 1000, base["c1"]["p90_us"] / 1000),
        (f"requests/s, c={args.connections}", o16n["cN"]["rps"], base["cN"]["rps"]),
        (
            f"p50 latency, c={args.connections} (ms)",
            o16n["cN"]["p50_us"] / 1000,
            base["cN"]["p50_us"] / 1000,
        ),
        (
            f"server CPU/request, c={args.connections} (µs)",
            o16n["cN"]["server_cpu_us_per_request"],
            base["cN"]["server_cpu_us_per_request"],
        ),
    ]
    lines = [
        f"GET /status (authenticated) vs bare aiohttp baseline — wrk, {args.duration} s per "
        f"run, {args.threads} wrk thread(s), {os.cpu_count()} cores",
        f"{'':28}{'o16n':>12}{'baseline':>12}{'o16n/base':>12}",
    ]
    for label, mine, theirs in rows:
        lines.append(f"{label:28}{mine:12.3f}{theirs:12.3f}{mine / theirs:12.2f}")
    components = ", ".join(f"{k}={v}" for k, v in figures["status_components"].items())
    lines.append(f"o16n /status answered {figures['status_code']!r} ({components})")
    lines.append("ratio o16n/base: > 1 is slower for latency, < 1 is slower for requests/s")
    lines.append(machine_line(figures["machine_at_start"], figures["machine_at_end"]))
    ratio = figures["ratios"]["rps_cN"]
    target = f"requests/s at c={args.connections} >= {TARGET} x baseline"
    figures["targets"] = [{"target": target, "value": ratio, "pass": ratio >= TARGET}]
    lines.append(f"{'PASS' if ratio >= TARGET else 'MISS'}  {target}: {ratio:.2f}")
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    password = "bench-" + secrets.token_urlsafe(18)
    servers: list[Server] = []
    try:
        o16n = start_o16n(tmp, password, args.image, instance=INSTANCE, tree=args.tree)
        servers.append(o16n)
        baseline = start_app(tmp, "baseline", BASELINE_APP)
        servers.append(baseline)
        for server in servers:
            server.wait_ready()
        api = Api(o16n.url).login(password)
        tree = api.ok("GET", "/status")
        script = write_script(tmp / "auth.lua", "GET", api.token or "")

        figures: dict[str, Any] = {
            "o16n": {},
            "baseline": {},
            "machine_at_start": machine_load(LABEL),
        }
        targets = {"o16n": o16n, "baseline": baseline}
        for server in targets.values() if args.warmup else ():  # warm-up, not recorded
            wrk(f"{server.url}/status", script, args.connections, args.threads, args.warmup)
        # interleaved, so that drift on the machine hits both alike
        for key, connections in (("c1", 1), ("cN", args.connections)):
            for name, server in targets.items():
                say(f"{name}: c={connections}, {args.duration} s ...")
                cpu = cpu_seconds(server.pid)
                result = wrk(
                    f"{server.url}/status", script, connections, args.threads, args.duration
                )
                used = cpu_seconds(server.pid) - cpu
                result["server_cpu_us_per_request"] = used / max(result["requests"], 1) * 1e6
                figures[name][key] = result
        figures["machine_at_end"] = machine_load(LABEL)
        for server in servers:
            if server.process.poll() is not None:
                raise BenchError(f"{server.name} died during the run:\n{server.log_tail()}")
        figures["status_code"] = tree.get("statusCode")
        figures["status_components"] = {
            name: node.get("statusCode") for name, node in tree.get("components", {}).items()
        }
        return figures
    finally:
        for server in servers:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per server (2)")
    parser.add_argument("--connections", type=int, default=16, help="concurrency of the rps run")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (this box: 2 cores)")
    common_options(parser)
    args = parser.parse_args(argv)
    if args.duration < 1 or args.warmup < 0 or args.connections < 1 or args.threads < 1:
        parser.error("--duration, --connections and --threads must be at least 1")

    return run_bench(
        "status",
        args,
        run,
        report,
        labels=[LABEL],
        tools=["wrk"],
        needs_image=False,
        wrk=wrk_version(),
    )


if __name__ == "__main__":
    raise SystemExit(main())
