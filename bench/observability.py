"""What watching costs: consume throughput with metrics and ``Server-Timing`` on versus off,
same run (issue 13: the cost must stay under 3 % at concurrency 16).

Starts two servers of the same tree, each with its own instance and data: ``on`` with the
defaults (``/metrics`` and ``Server-Timing`` on, scraped by a Prometheus-like client every
``--scrape-interval`` seconds while it is loaded) and ``off`` with ``O16N_METRICS=off`` and
``O16N_SERVER_TIMING=off``. Both publish the seed's Iris service (pools of ``--pool-initial``
/ ``--pool-max``); then ``wrk`` drives ``POST /api/Iris/V1.0`` at ``--connections`` for
``--rounds`` interleaved runs per server (the first server alternating), every answer
checked. The cost is ``1 - median(on) / median(off)`` of requests/s.

    .venv/bin/python -m bench.observability [--duration 10] [--rounds 3] [--connections 16]

Needs ``wrk``. Every container and image labelled with either instance is removed at the
end, also after an error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench import _iris as iris
from bench._bench import run_bench
from bench._client import Api
from bench._docker import machine_line, machine_load
from bench._server import BenchError, Server, common_options, cpu_seconds, say, start_o16n
from bench._wrk import write_script, wrk, wrk_version

INSTANCES = {"on": "o16n-bench-obs-on", "off": "o16n-bench-obs-off"}
LABELS = [f"o16n.instance={instance}" for instance in INSTANCES.values()]
LOADED = "V1.0"
EXPECT = ('"success":%s*true', '"iris_species":%s*%[%s*"I%. setosa"%s*%]')  # Lua patterns
OFF = {"O16N_METRICS": "off", "O16N_SERVER_TIMING": "off"}


class Scraper:
    """Fetches ``/metrics`` every ``interval`` seconds until stopped, as Prometheus would;
    any answer but 200 is an error of the run."""

    def __init__(self, url: str, token: str, interval: float) -> None:
        self._request = urllib.request.Request(
            f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}
        )
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.scrapes = 0
        self.bytes = 0
        self.error = ""

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                with urllib.request.urlopen(self._request, timeout=10) as answer:
                    self.bytes = len(answer.read())
                self.scrapes += 1
            except (OSError, urllib.error.HTTPError) as exc:
                self.error = repr(exc)
                return


def check_switches(api: Api, server: Server, name: str, token: str) -> dict[str, Any]:
    """Which server is which, seen from outside: the header and the endpoint."""
    request = urllib.request.Request(
        f"{server.url}/api/{iris.SERVICE}/{LOADED}",
        data=json.dumps(iris.INPUT).encode(),
        headers={"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        timing = answer.headers.get("Server-Timing")
    scrape = urllib.request.Request(
        f"{server.url}/metrics", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(scrape, timeout=30) as answer:
            metrics_status = answer.status
    except urllib.error.HTTPError as exc:
        metrics_status = exc.code
    expected_on = name == "on"
    if (timing is not None) != expected_on or (metrics_status == 200) != expected_on:
        raise BenchError(
            f"server {name}: Server-Timing {timing!r}, /metrics answered {metrics_status}"
        )
    return {"server_timing": timing, "metrics_status": metrics_status}


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {"machine_at_start": machine_load(LABELS[0])}
    password = "bench-" + secrets.token_urlsafe(18)
    token = secrets.token_urlsafe(32)
    pools = {
        "O16N_SERVICE_POOL_INITIAL": str(args.pool_initial),
        "O16N_SERVICE_POOL_MAX": str(args.pool_max),
        "O16N_METRICS_TOKEN": token,
    }
    servers = {
        name: start_o16n(
            tmp,
            password,
            args.image,
            instance=INSTANCES[name],
            tree=args.tree,
            name=name,
            env={**pools, **(OFF if name == "off" or args.control else {})},
        )
        for name in INSTANCES
    }
    try:
        apis: dict[str, Api] = {}
        for name, server in servers.items():
            server.wait_ready()
            apis[name] = api = Api(server.url).login(password)
            say(f"{name}: Iris session, snapshot, publish ...")
            snapshot_id, _ = iris.snapshot(api)
            iris.publish(api, server, snapshot_id, LOADED)
            iris.wait_pool(api, LOADED, args.pool_initial)
            if not args.control:
                figures[f"switches_{name}"] = check_switches(api, server, name, token)
        body = json.dumps(iris.INPUT, separators=(",", ":"))
        scripts = {
            name: write_script(tmp / f"{name}.lua", "POST", api.token or "", body, EXPECT)
            for name, api in apis.items()
        }
        urls = {name: f"{s.url}/api/{iris.SERVICE}/{LOADED}" for name, s in servers.items()}
        for name in servers if args.warmup else ():  # not recorded
            say(f"{name}: warm-up, {args.warmup} s ...")
            wrk(urls[name], scripts[name], args.connections, args.threads, args.warmup)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
        order = list(servers)
        for round_ in range(args.rounds):
            for name in order if round_ % 2 == 0 else reversed(order):
                say(f"{name}: round {round_ + 1}, c={args.connections}, {args.duration} s ...")
                runs[name].append(
                    measured(servers[name], urls[name], scripts[name], name, token, args)
                )
        figures["runs"] = runs
        figures["machine_at_end"] = machine_load(LABELS[0])
        return figures
    finally:
        for server in servers.values():
            server.stop()


def measured(
    server: Server, url: str, script: Path, name: str, token: str, args: argparse.Namespace
) -> dict[str, Any]:
    """One wrk run with the server's CPU per request; ``on`` is scraped meanwhile."""
    cpu = cpu_seconds(server.pid)
    load = (url, script, args.connections, args.threads, args.duration)
    if name == "on" and not args.control:
        with Scraper(server.url, token, args.scrape_interval) as scraper:
            result = wrk(*load, check_answers=True)
        if scraper.error or not scraper.scrapes:
            raise BenchError(f"scraping /metrics failed: {scraper.error or 'no scrape'}")
        result["scrapes"], result["metrics_bytes"] = scraper.scrapes, scraper.bytes
    else:
        result = wrk(*load, check_answers=True)
    server.check_alive()
    result["server_cpu_us_per_request"] = (
        (cpu_seconds(server.pid) - cpu) / max(result["requests"], 1) * 1e6
    )
    return result


def summarise(figures: dict[str, Any], args: argparse.Namespace) -> str:
    runs = figures["runs"]
    median = {
        name: {
            "rps": statistics.median(r["rps"] for r in results),
            "p50_us": statistics.median(r["p50_us"] for r in results),
            "p99_us": statistics.median(r["p99_us"] for r in results),
            "cpu_us": statistics.median(r["server_cpu_us_per_request"] for r in results),
        }
        for name, results in runs.items()
    }
    # each round's two runs are neighbours in time: their ratio cancels the machine's drift
    paired = [a["rps"] / b["rps"] for a, b in zip(runs["on"], runs["off"], strict=True)]
    cost = 1 - statistics.median(paired)
    cpu_cost = median["on"]["cpu_us"] - median["off"]["cpu_us"]
    figures["median"], figures["paired_ratios"] = median, paired
    figures["cost"] = {"throughput": cost, "cpu_us": cpu_cost}
    each = {name: ", ".join(f"{r['rps']:.0f}" for r in results) for name, results in runs.items()}
    lines = [
        f"POST /api/Iris/{LOADED} at c={args.connections}, pool {args.pool_initial}/"
        f"{args.pool_max}, {args.rounds} interleaved wrk runs of {args.duration} s per server",
        f"{'':<34}{'on':>12}{'off':>12}",
        *(
            f"{label:<34}{median['on'][key] * x:>12.1f}{median['off'][key] * x:>12.1f}"
            for label, key, x in (
                ("requests/s (median)", "rps", 1.0),
                ("p50 latency (ms)", "p50_us", 1e-3),
                ("p99 latency (ms)", "p99_us", 1e-3),
                ("server CPU/request (µs)", "cpu_us", 1.0),
            )
        ),
        f"runs, requests/s: on {each['on']}; off {each['off']}",
        "on/off of each round: " + ", ".join(f"{r:.3f}" for r in paired),
        machine_line(figures["machine_at_start"], figures["machine_at_end"]),
    ]
    if args.control:
        lines.insert(1, "CONTROL RUN: both servers off; the cost below is the bench's noise")
    else:
        scrapes = runs["on"][-1]["metrics_bytes"]
        lines.insert(
            -1,
            f"/metrics scraped every {args.scrape_interval:g} s during the on runs "
            f"({scrapes} bytes a scrape)",
        )
        timing = figures["switches_on"]["server_timing"]
        lines.insert(-1, f"an on answer's Server-Timing: {timing}")
    checks = [(f"throughput cost at c={args.connections} < 3 %", cost * 100, cost < 0.03)]
    figures["targets"] = [{"target": t, "value": v, "pass": p} for t, v, p in checks]
    lines.append(f"CPU per request, on - off: {cpu_cost:+.1f} µs")
    lines += [f"{'PASS' if p else 'MISS'}  {t}: {v:.2f} %" for t, v, p in checks]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per server (3)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per server (3)")
    parser.add_argument("--connections", type=int, default=16, help="concurrency (16)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument("--pool-initial", type=int, default=2, help="InitialPoolSize (2)")
    parser.add_argument("--pool-max", type=int, default=2, help="MaxPoolSize (2)")
    parser.add_argument(
        "--scrape-interval", type=float, default=1.0, help="seconds between scrapes (1)"
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="both servers off (an A/A run): the difference is the bench's own noise",
    )
    common_options(parser)
    args = parser.parse_args(argv)
    if min(args.duration, args.rounds, args.connections, args.threads) < 1:
        parser.error("--duration, --rounds, --connections, --threads must be >= 1")
    if args.warmup < 0 or args.pool_initial < 1 or args.pool_max < args.pool_initial:
        parser.error("need --warmup >= 0 and 1 <= --pool-initial <= --pool-max")
    if args.scrape_interval <= 0:
        parser.error("--scrape-interval must be > 0")
    return run_bench(
        "observability",
        args,
        run,
        summarise,
        labels=LABELS,
        tools=["wrk", "docker"],
        images=True,
        wrk=wrk_version(),
    )


if __name__ == "__main__":
    raise SystemExit(main())
