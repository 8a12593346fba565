"""Benchmark of sessions: creation, execute round trip and idle memory, with same-run baselines.

Starts two o16n servers (``python -m controller serve``, fresh data dirs under /tmp, random
admin password, access log off): "warm" with ``O16N_WARM_POOL_SIZE=--pool-size`` (instance
``o16n-bench-sessions``) and "cold" with a pool of 0 (instance ``o16n-bench-sessions-cold``),
plus a bare aiohttp baseline app. Then, in one run:

1. ``POST /sessions`` latency from a full warm pool, with the pool empty, and the baseline
   ``docker run --rm --entrypoint true IMAGE``; samples interleaved, every one taken when
   the warm pool is full and no container is starting; sessions deleted after each sample.
2. ``POST /sessions/{id}/execute`` with ``1+1``: p50/p90 and requests/s at concurrency 1,
   requests/s with N clients on one session and on N sessions; baseline: the same load
   generator (aiohttp client, this process) against an aiohttp app that compiles and execs
   the code in its own process.
3. Memory of idle sessions (each ran ``1+1``): ``docker stats`` per container, containerd
   shim PSS, controller RSS growth, and how many idle sessions this machine would hold.

    .venv/bin/python -m bench.sessions [--n 20] [--requests 2000] [--duration 5]
                                       [--concurrency 4] [--idle 20] [--image TAG]

Writes bench/results/sessions-<timestamp>.json. Every container labelled with either
instance is removed at the end, also after an error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import docker

from bench._docker import docker_run_sample, preflight, scratch_dir
from bench._server import (
    BenchError,
    Server,
    cpu_seconds,
    failed,
    finish,
    interrupt_on_sigterm,
    login,
    percentile,
    run_meta,
    start_app,
    start_o16n,
    summary,
)
from controller.runtime.image import default_tag

WARM = "o16n-bench-sessions"
COLD = "o16n-bench-sessions-cold"
INSTANCES = (WARM, COLD)
LABELS = tuple(f"o16n.instance={instance}" for instance in INSTANCES)
CODE = "1+1"
#: Run after ``1+1`` in each session whose container we need to find (``os`` is loaded).
KEY_CODE = "import os as _bench_os\n_bench_key = _bench_os.environ['O16N_CONTAINER_KEY']"
MIB = 1024 * 1024
TARGET_CREATE_MS = 20.0
TARGET_EXECUTE_MS = 2.0

#: The baseline: an aiohttp app that compiles and execs the posted code in-process and
#: answers with the same fields as o16n's execute reply.
BASELINE_APP = """
import sys
from aiohttp import web

NAMESPACE = {}


async def execute(request):
    body = await request.json()
    exec(compile(body["code"], "<execution>", "exec"), NAMESPACE)
    return web.json_response({
        "success": True, "errorMessage": "", "consoleOutput": "",
        "changedFiles": [], "outputParameters": [],
    })


async def status(request):
    return web.json_response({"statusCode": "pass"})


app = web.Application()
app.router.add_post("/sessions/{id}/execute", execute)
app.router.add_get("/status", status)
web.run_app(app, host=sys.argv[1], port=int(sys.argv[2]), access_log=None, print=None)
"""


# --- docker ---------------------------------------------------------------------------------


def started_at(attrs: dict[str, Any]) -> float:
    """A container's State.StartedAt as a Unix time (3.11 parses nanoseconds and Z)."""
    return datetime.fromisoformat(attrs["State"]["StartedAt"]).timestamp()


class Docker:
    """The few Docker look-ups the benchmark needs (blocking; call them in a thread)."""

    def __init__(self) -> None:
        self.client = docker.from_env(timeout=60)

    def owned(self, instance: str) -> list[dict[str, Any]]:
        """``inspect`` of every container labelled with ``instance``, any state."""
        found = self.client.containers.list(
            all=True, filters={"label": f"o16n.instance={instance}"}, ignore_removed=True
        )
        return [c.attrs for c in found]

    def by_label(self, instance: str, label: str, value: str) -> list[dict[str, Any]]:
        found = self.client.containers.list(
            all=True,
            filters={"label": [f"o16n.instance={instance}", f"o16n.{label}={value}"]},
            ignore_removed=True,
        )
        return [c.attrs for c in found]

    def others_running(self) -> int:
        """Running containers that are not this benchmark's (other people's tests)."""
        count = 0
        for container in self.client.containers.list(sparse=True):
            if container.attrs.get("Labels", {}).get("o16n.instance") not in INSTANCES:
                count += 1
        return count

    def close(self) -> None:
        self.client.close()


def labels(attrs: dict[str, Any]) -> dict[str, str]:
    return dict(attrs["Config"]["Labels"] or {})


async def wait_quiet(
    dock: Docker, pool_size: int, busy: set[str], settle: float, timeout: float = 120.0
) -> None:
    """Until the warm server's pool is full and settled and nothing else is in flight.

    Every container of both instances must be either a known session's (``busy`` keys) or
    one of exactly ``pool_size`` running warm containers, each started at least ``settle``
    seconds ago (enough for its agent to dial in, after which the pool hands it out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        warm, stray = [], 0
        for instance in INSTANCES:
            for attrs in await asyncio.to_thread(dock.owned, instance):
                tags = labels(attrs)
                if tags.get("o16n.key") in busy:
                    continue
                if (
                    instance == WARM
                    and tags.get("o16n.kind") == "warm"
                    and attrs["State"]["Status"] == "running"
                ):
                    warm.append(started_at(attrs))
                else:
                    stray += 1
        if stray == 0 and len(warm) == pool_size:
            remaining = max(warm) + settle - time.time()
            if remaining <= 0:
                return
            await asyncio.sleep(remaining)
        else:
            await asyncio.sleep(0.1)
    raise BenchError(
        f"the warm pool did not settle within {timeout:.0f} s "
        f"(want {pool_size} warm containers and nothing else)"
    )


async def docker_stats(names: list[str]) -> dict[str, float]:
    """Memory usage in bytes per container name, as ``docker stats`` reports it."""
    cmd = ["docker", "stats", "--no-stream", "--format", "{{.Name}}\t{{.MemUsage}}", *names]
    process = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await process.communicate()
    if process.returncode != 0:
        raise BenchError(f"docker stats failed ({process.returncode}): {stderr.decode()}")
    usage: dict[str, float] = {}
    for line in stdout.decode().splitlines():
        name, _, mem = line.partition("\t")
        usage[name.strip()] = parse_size(mem.split("/")[0])
    return usage


UNITS = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}
UNITS.update({"KiB": 1024, "MiB": MIB, "GiB": 1024 * MIB, "TiB": 1024 * 1024 * MIB})


def parse_size(text: str) -> float:
    match = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]+)\s*", text)
    if match is None or match.group(2) not in UNITS:
        raise BenchError(f"cannot read the size {text!r} from docker stats")
    return float(match.group(1)) * UNITS[match.group(2)]


# --- host memory ----------------------------------------------------------------------------


def meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes."""
    values = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        values[name] = int(rest.split()[0]) * 1024
    return values


def proc_field(pid: int, name: str, file: str = "status") -> int | None:
    """A ``kB`` field of /proc/<pid>/<file> in bytes (``PPid`` as is), None if unreadable."""
    try:
        text = Path(f"/proc/{pid}/{file}").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + ":"):
            value = int(line.split()[1])
            return value if name == "PPid" else value * 1024
    return None


def agent_pid(init_pid: int) -> int | None:
    """The agent: the only child of the container's init process (docker-init)."""
    try:
        children = Path(f"/proc/{init_pid}/task/{init_pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def shim_pss(container_pid: int) -> int | None:
    """PSS of the containerd shim that parents the container's first process."""
    parent = proc_field(container_pid, "PPid")
    if not parent:
        return None
    return proc_field(parent, "Pss", "smaps_rollup")


# --- HTTP load ------------------------------------------------------------------------------


@dataclass
class Api:
    """One o16n server as the benchmark's client sees it; remembers sessions to close."""

    server: Server
    token: str
    client: aiohttp.ClientSession
    open: set[str] = field(default_factory=set)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}

    async def create(self) -> tuple[str, float]:
        """A new session's id, and the seconds ``POST /sessions`` took."""
        body = b'{"runtimeType":"Python"}'
        started = time.perf_counter()
        async with self.client.post(
            f"{self.server.url}/sessions", data=body, headers=self.headers
        ) as response:
            raw = await response.read()
        elapsed = time.perf_counter() - started
        if response.status != 201:
            raise BenchError(f"POST /sessions on {self.server.name}: {response.status} {raw!r}")
        session_id = str(json.loads(raw)["sessionId"])
        self.open.add(session_id)
        return session_id, elapsed

    async def delete(self, session_id: str) -> float:
        started = time.perf_counter()
        async with self.client.delete(
            f"{self.server.url}/sessions/{session_id}", headers=self.headers
        ) as response:
            raw = await response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise BenchError(f"DELETE /sessions/{session_id}: {response.status} {raw!r}")
        self.open.discard(session_id)
        return elapsed

    async def execute(
        self, session_id: str, code: str, outputs: list[str] | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"code": code}
        if outputs:
            body["outputParameters"] = outputs
        async with self.client.post(
            f"{self.server.url}/sessions/{session_id}/execute", json=body, headers=self.headers
        ) as response:
            raw = await response.read()
        reply: dict[str, Any] = json.loads(raw) if response.status == 200 else {}
        if reply.get("success") is not True:
            raise BenchError(f"execute in {session_id}: {response.status} {raw[:500]!r}")
        return reply

    async def open_session(self) -> tuple[str, str]:
        """A session that ran ``1+1``, and the key of its container."""
        session_id, _ = await self.create()
        await self.execute(session_id, CODE)
        reply = await self.execute(session_id, KEY_CODE, ["_bench_key"])
        values = {p["name"]: p["value"] for p in reply["outputParameters"]}
        return session_id, str(values["_bench_key"])

    async def close_all(self) -> None:
        """Best effort, at the end: the sweep by label removes whatever this leaves."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                for session_id in list(self.open):
                    with contextlib.suppress(BenchError, aiohttp.ClientError, OSError):
                        await self.delete(session_id)


@dataclass
class Load:
    latencies: list[float]
    elapsed: float
    clients: int
    sessions: int

    def figures(self) -> dict[str, Any]:
        ms = [s * 1000 for s in self.latencies]
        return {
            "requests": len(ms),
            "clients": self.clients,
            "sessions": self.sessions,
            "seconds": self.elapsed,
            "rps": len(ms) / self.elapsed,
            "p50_ms": percentile(ms, 50),
            "p90_ms": percentile(ms, 90),
            "p99_ms": percentile(ms, 99),
            "max_ms": max(ms),
        }


async def drive(
    client: aiohttp.ClientSession,
    urls: list[str],
    headers: dict[str, str],
    clients: int,
    *,
    requests: int = 0,
    duration: float = 0.0,
) -> Load:
    """``clients`` workers, worker i posting ``1+1`` to ``urls[i % len(urls)]`` one request
    after another, until ``requests`` are done in total or for ``duration`` seconds."""
    body = json.dumps({"code": CODE}).encode()
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + duration
    budget = [requests]

    async def worker(url: str) -> None:
        while (budget[0] > 0) if requests else (time.perf_counter() < deadline):
            budget[0] -= 1
            sent = time.perf_counter()
            async with client.post(url, data=body, headers=headers) as response:
                raw = await response.read()
            latencies.append(time.perf_counter() - sent)
            if response.status != 200 or json.loads(raw).get("success") is not True:
                raise BenchError(f"{url}: {response.status} {raw[:500]!r}")

    await asyncio.gather(*(worker(urls[i % len(urls)]) for i in range(clients)))
    return Load(latencies, time.perf_counter() - started, clients, len(set(urls)))


# --- the phases -----------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    image: str
    dock: Docker
    warm: Api
    cold: Api
    baseline: Server

    def say(self, text: str) -> None:
        print(f"  {text}", file=sys.stderr, flush=True)

    async def quiet(self, busy: set[str] | None = None) -> None:
        await wait_quiet(self.dock, self.args.pool_size, busy or set(), self.args.settle)

    async def warm_sample(self) -> tuple[float, float, int]:
        """Seconds of one POST /sessions served from the full pool, seconds of the DELETE,
        and how many attempts hit a container started on demand (discarded)."""
        for misses in range(5):
            await self.quiet()
            session_id, elapsed = await self.warm.create()
            started_for_it = await asyncio.to_thread(self.dock.by_label, WARM, "id", session_id)
            removed = await self.warm.delete(session_id)
            if not started_for_it:
                return elapsed, removed, misses
            self.say(f"POST /sessions did not take a warm container ({elapsed * 1000:.0f} ms)")
        raise BenchError("five POST /sessions in a row found the full warm pool empty")

    async def cold_sample(self) -> float:
        await self.quiet()
        session_id, elapsed = await self.cold.create()
        await self.cold.delete(session_id)
        return elapsed

    async def docker_sample(self) -> float:
        await self.quiet()
        return await docker_run_sample(self.image, f"o16n.instance={WARM}")

    async def creation(self) -> dict[str, Any]:
        n = self.args.n
        warm: list[float] = []
        deletes: list[float] = []
        cold: list[float] = []
        base: list[float] = []
        misses = 0

        async def take_warm() -> None:
            nonlocal misses
            elapsed, removed, missed = await self.warm_sample()
            warm.append(elapsed)
            deletes.append(removed)
            misses += missed

        async def take_cold() -> None:
            cold.append(await self.cold_sample())

        async def take_base() -> None:
            base.append(await self.docker_sample())

        self.say("POST /sessions: warm-up")
        await self.warm_sample()  # opens the keep-alive connections, warms caches
        await self.cold_sample()
        await self.docker_sample()
        order = [take_warm, take_cold, take_base]
        for i in range(n):
            for step in order[i % 3 :] + order[: i % 3]:  # rotate, so drift hits all alike
                await step()
            if (i + 1) % 5 == 0 or i + 1 == n:
                self.say(
                    f"POST /sessions {i + 1}/{n}: warm {warm[-1] * 1000:.1f} ms, "
                    f"empty pool {cold[-1] * 1000:.0f} ms, docker run {base[-1] * 1000:.0f} ms"
                )
        return {
            "warm_pool": summary(warm),
            "empty_pool": summary(cold),
            "docker_run_true": summary(base),
            "delete_after_warm": summary(deletes),
            "warm_pool_misses": misses,
        }

    async def execute(self) -> dict[str, Any]:
        args = self.args
        sessions = [await self.warm.open_session() for _ in range(args.concurrency)]
        await self.quiet({key for _, key in sessions})
        mine = [f"{self.warm.server.url}/sessions/{sid}/execute" for sid, _ in sessions]
        base = f"{self.baseline.url}/sessions/baseline/execute"
        client, headers = self.warm.client, self.warm.headers
        self.say(f"execute: warm-up, {args.warmup_requests} requests per target")
        await drive(client, mine, headers, len(mine), requests=args.warmup_requests)
        await drive(client, [base], headers, 1, requests=args.warmup_requests)
        figures: dict[str, Any] = {"o16n": {}, "baseline": {}}
        runs = [
            ("o16n", "c1", [mine[0]], 1, args.requests, 0.0),
            ("baseline", "c1", [base], 1, args.requests, 0.0),
            ("o16n", "cN_one_session", [mine[0]], args.concurrency, 0, args.duration),
            ("baseline", "cN", [base], args.concurrency, 0, args.duration),
            ("o16n", "cN_sessions", mine, args.concurrency, 0, args.duration),
        ]
        agents = await asyncio.to_thread(self.agent_pids, [key for _, key in sessions])
        for target, key, urls, clients, count, seconds in runs:
            what = f"{count} requests" if count else f"{seconds:g} s"
            self.say(f"execute: {target} {key}, {clients} client(s), {what}")
            pids = {"client": os.getpid()}
            if target == "o16n":
                pids |= {"controller": self.warm.server.pid} | agents
            else:
                pids["server"] = self.baseline.pid
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            load = await drive(client, urls, headers, clients, requests=count, duration=seconds)
            spent = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
            result = load.figures()
            result["cpu_ms_per_request"] = cpu_per_request(spent, len(load.latencies))
            figures[target][key] = result
        for session_id, _ in sessions:
            await self.warm.delete(session_id)
        return figures

    def agent_pids(self, keys: list[str]) -> dict[str, int]:
        """``agent<i>``: the agent process of the session container with ``keys[i]``."""
        pids = {}
        for i, key in enumerate(keys):
            for attrs in self.dock.by_label(WARM, "key", key):
                pid = agent_pid(attrs["State"]["Pid"])
                if pid is not None:
                    pids[f"agent{i}"] = pid
        return pids

    async def memory(self) -> dict[str, Any]:
        args = self.args
        await self.quiet()
        pid = self.warm.server.pid
        rss_before = proc_field(pid, "VmRSS")
        available_before = meminfo()["MemAvailable"]
        self.say(f"memory: opening {args.idle} idle sessions")
        sessions = [await self.warm.open_session() for _ in range(args.idle)]
        keys = {key for _, key in sessions}
        await self.quiet(keys)
        await asyncio.sleep(2.0)  # let the agents' start-up garbage settle
        rss_after = proc_field(pid, "VmRSS")
        info = meminfo()
        containers: list[dict[str, Any]] = []
        for instance_attrs in await asyncio.to_thread(self.dock.owned, WARM):
            key = labels(instance_attrs).get("o16n.key", "")
            containers.append(
                {
                    "name": instance_attrs["Name"].lstrip("/"),
                    "key": key,
                    "session": key in keys,
                    "limit": instance_attrs["HostConfig"]["Memory"],
                    "shim_pss": shim_pss(instance_attrs["State"]["Pid"]),
                }
            )
        found = {c["key"] for c in containers if c["session"]}
        if found != keys:
            raise BenchError(f"containers of {len(keys - found)} idle session(s) not found")
        usage = await docker_stats([c["name"] for c in containers])
        for c in containers:
            c["usage"] = usage[c["name"]]
        idle = [c for c in containers if c["session"]]
        pool = [c for c in containers if not c["session"]]
        for session_id, _ in sessions:
            await self.warm.delete(session_id)

        per_container = [c["usage"] for c in idle]
        shims = [c["shim_pss"] for c in idle if c["shim_pss"] is not None]
        controller = None
        if rss_before is not None and rss_after is not None:
            controller = (rss_after - rss_before) / len(idle)
        total, available = info["MemTotal"], info["MemAvailable"]
        used = total - available
        container_mean = statistics.fmean(per_container)
        all_in = container_mean + (statistics.fmean(shims) if shims else 0.0)
        all_in += max(controller or 0.0, 0.0)
        sessions_use = all_in * len(idle)
        other = used - sessions_use
        limit = int(idle[0]["limit"])
        return {
            "idle_sessions": len(idle),
            "container_mib": {
                "mean": container_mean / MIB,
                "median": statistics.median(per_container) / MIB,
                "min": min(per_container) / MIB,
                "max": max(per_container) / MIB,
                "samples": [round(v / MIB, 2) for v in per_container],
            },
            "warm_pool_container_mib": [round(c["usage"] / MIB, 2) for c in pool],
            "shim_pss_mib": statistics.fmean(shims) / MIB if shims else None,
            "controller_rss_mib": {
                "before": rss_before / MIB if rss_before is not None else None,
                "after": rss_after / MIB if rss_after is not None else None,
                "per_session": controller / MIB if controller is not None else None,
            },
            "mem_available_drop_per_session_mib": (available_before - available) / len(idle) / MIB,
            "host": {
                "total_mib": total / MIB,
                "available_mib": available / MIB,
                "used_mib": used / MIB,
                "other_mib": other / MIB,
            },
            "per_session_all_in_mib": all_in / MIB,
            "capacity_idle_sessions": int((total - other) // all_in),
            "capacity_container_only": int(
                (total - (used - container_mean * len(idle))) // container_mean
            ),
            "container_memory_limit_mib": limit / MIB,
            "capacity_at_limit": int((total - other) // limit),
        }


def cpu_per_request(spent: dict[str, float], requests: int) -> dict[str, float]:
    """CPU milliseconds per request by process; the agents of several sessions summed."""
    per: dict[str, float] = {}
    for name, seconds in spent.items():
        name = "agents" if name.startswith("agent") else name
        per[name] = per.get(name, 0.0) + seconds * 1000 / requests
    return per


async def measure(
    args: argparse.Namespace, image: str, servers: dict[str, Server], tokens: dict[str, str]
) -> dict[str, Any]:
    dock = Docker()
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=120)
        ) as client:
            warm = Api(servers["warm"], tokens["warm"], client)
            cold = Api(servers["cold"], tokens["cold"], client)
            bench = Bench(args, image, dock, warm, cold, servers["baseline"])
            try:
                figures: dict[str, Any] = {
                    "load_before": os.getloadavg(),
                    "other_containers_running": await asyncio.to_thread(dock.others_running),
                }
                figures["create"] = await bench.creation()
                figures["execute"] = await bench.execute()
                figures["memory"] = await bench.memory()
                figures["load_after"] = os.getloadavg()
                for server in servers.values():
                    server.check_alive()
                return figures
            finally:
                await warm.close_all()
                await cold.close_all()
    finally:
        dock.close()


def run(args: argparse.Namespace, image: str) -> dict[str, Any]:
    password = "bench-" + secrets.token_urlsafe(18)
    # no service warm pool: only the sessions' warm containers run on these servers
    common = {"O16N_SESSIONS_PER_USER": "1000", "O16N_SERVICE_WARM_POOL_SIZE": "0"}
    servers: dict[str, Server] = {}
    with scratch_dir("sessions", LABELS) as tmp:
        try:
            servers["warm"] = start_o16n(
                tmp,
                password,
                image,
                instance=WARM,
                name="warm",
                env={**common, "O16N_WARM_POOL_SIZE": str(args.pool_size)},
                detach=True,
            )
            servers["cold"] = start_o16n(
                tmp,
                password,
                image,
                instance=COLD,
                name="cold",
                env={**common, "O16N_WARM_POOL_SIZE": "0"},
                detach=True,
            )
            servers["baseline"] = start_app(tmp, "baseline", BASELINE_APP, detach=True)
            for server in servers.values():
                server.wait_ready()
            tokens = {name: login(servers[name], password) for name in ("warm", "cold")}
            try:
                return asyncio.run(measure(args, image, servers, tokens))
            except (aiohttp.ClientError, OSError) as exc:
                dead = [s for s in servers.values() if s.process.poll() is not None]
                detail = "".join(f"\n{s.name} exited:\n{s.log_tail()}" for s in dead)
                raise BenchError(f"{type(exc).__name__}: {exc}{detail}") from None
        finally:
            for server in servers.values():
                server.stop()


# --- report ---------------------------------------------------------------------------------


def ratios(figures: dict[str, Any]) -> dict[str, float]:
    create, execute = figures["create"], figures["execute"]
    docker_p50 = create["docker_run_true"]["p50_ms"]
    mine, base = execute["o16n"], execute["baseline"]
    return {
        "create_warm_p50_vs_docker_run": create["warm_pool"]["p50_ms"] / docker_p50,
        "create_empty_p50_vs_docker_run": create["empty_pool"]["p50_ms"] / docker_p50,
        "execute_p50_c1": mine["c1"]["p50_ms"] / base["c1"]["p50_ms"],
        "execute_p90_c1": mine["c1"]["p90_ms"] / base["c1"]["p90_ms"],
        "execute_rps_c1": mine["c1"]["rps"] / base["c1"]["rps"],
        "execute_rps_cN_one_session": mine["cN_one_session"]["rps"] / base["cN"]["rps"],
        "execute_rps_cN_sessions": mine["cN_sessions"]["rps"] / base["cN"]["rps"],
    }


def targets(figures: dict[str, Any]) -> list[dict[str, Any]]:
    create = figures["create"]["warm_pool"]["p50_ms"]
    execute = figures["execute"]["o16n"]["c1"]["p50_ms"]
    return [
        {
            "what": "POST /sessions p50 from the warm pool",
            "ms": create,
            "target_ms": TARGET_CREATE_MS,
            "pass": create <= TARGET_CREATE_MS,
        },
        {
            "what": "execute round trip p50, c=1",
            "ms": execute,
            "target_ms": TARGET_EXECUTE_MS,
            "pass": execute <= TARGET_EXECUTE_MS,
        },
    ]


def report(figures: dict[str, Any], args: argparse.Namespace, image: str) -> str:
    meta, create, ratio = figures["meta"], figures["create"], figures["ratios"]
    load0, load1 = figures["load_before"][0], figures["load_after"][0]
    lines = [
        f"sessions: {image}, {os.cpu_count()} cores, {meta['ram_mib'] / 1024:.1f} GiB RAM; "
        f"1-min load average {load0:.2f} at start, {load1:.2f} at end; "
        f"{figures['other_containers_running']} containers of others running at start",
        "",
        f"{'POST /sessions (n=' + str(args.n) + ')':40}{'p50 ms':>9}{'p90 ms':>9}{'min ms':>9}"
        f"{'p50/docker':>12}",
    ]
    rows = [
        (f"from the warm pool (size {args.pool_size})", create["warm_pool"], "warm"),
        ("with the pool empty", create["empty_pool"], "empty"),
        ("docker run --rm --entrypoint true", create["docker_run_true"], None),
        ("(DELETE after a warm one, not timed in)", create["delete_after_warm"], None),
    ]
    for label, stats, key in rows:
        ratio_text = f"{ratio[f'create_{key}_p50_vs_docker_run']:12.3f}" if key else ""
        lines.append(
            f"  {label:38}{stats['p50_ms']:9.1f}{stats['p90_ms']:9.1f}{stats['min_ms']:9.1f}"
            + ratio_text
        )
    if create["warm_pool_misses"]:
        lines.append(
            f"  ({create['warm_pool_misses']} warm-pool attempt(s) got a container started on "
            "demand and were discarded)"
        )

    mine, base = figures["execute"]["o16n"], figures["execute"]["baseline"]
    c = args.concurrency
    lines += [
        "",
        f"{'execute 1+1 round trip':40}{'o16n':>9}{'baseline':>10}{'o16n/base':>11}",
    ]
    rows2 = [
        ("p50 latency, c=1 (ms)", mine["c1"]["p50_ms"], base["c1"]["p50_ms"]),
        ("p90 latency, c=1 (ms)", mine["c1"]["p90_ms"], base["c1"]["p90_ms"]),
        ("requests/s, c=1", mine["c1"]["rps"], base["c1"]["rps"]),
        (f"requests/s, c={c}, one session", mine["cN_one_session"]["rps"], base["cN"]["rps"]),
        (
            f"p50 latency, c={c}, one session (ms)",
            mine["cN_one_session"]["p50_ms"],
            base["cN"]["p50_ms"],
        ),
        (f"requests/s, c={c}, {c} sessions", mine["cN_sessions"]["rps"], base["cN"]["rps"]),
        (
            f"p50 latency, c={c}, {c} sessions (ms)",
            mine["cN_sessions"]["p50_ms"],
            base["cN"]["p50_ms"],
        ),
    ]
    for label, ours, theirs in rows2:
        lines.append(f"  {label:38}{ours:9.2f}{theirs:10.2f}{ours / theirs:11.2f}")
    lines.append(
        f"  ({mine['c1']['requests']} sequential requests at c=1, {args.duration:g} s per c={c} "
        f"run; baseline of both c={c} rows: {c} clients on the baseline app)"
    )
    for label, key, base_key in (
        ("c=1", "c1", "c1"),
        (f"c={c}, {c} sessions", "cN_sessions", "cN"),
    ):
        ours, theirs = mine[key]["cpu_ms_per_request"], base[base_key]["cpu_ms_per_request"]
        lines.append(
            f"  CPU ms per request, {label}: o16n controller {ours['controller']:.2f}, "
            f"agent(s) {ours.get('agents', 0.0):.2f}, client {ours['client']:.2f}; "
            f"baseline server {theirs['server']:.2f}, client {theirs['client']:.2f}"
        )

    mem = figures["memory"]
    box, per = mem["host"], mem["container_mib"]
    ctl = mem["controller_rss_mib"]
    lines += [
        "",
        f"idle sessions (n={mem['idle_sessions']}, each ran 1+1)",
        f"  container memory (docker stats)   mean {per['mean']:.1f} MiB, median "
        f"{per['median']:.1f} MiB (min {per['min']:.1f}, max {per['max']:.1f})",
    ]
    if mem["shim_pss_mib"] is not None:
        lines.append(
            f"  containerd shim PSS              {mem['shim_pss_mib']:.1f} MiB per container"
        )
    if ctl["per_session"] is not None:
        lines.append(
            f"  controller RSS                   {ctl['per_session']:+.2f} MiB per session "
            f"({ctl['before']:.1f} → {ctl['after']:.1f} MiB)"
        )
    lines.append(
        f"  host MemAvailable drop           {mem['mem_available_drop_per_session_mib']:.1f} MiB "
        "per session (whole machine: noisy)"
    )
    other_c = box["used_mib"] - per["mean"] * mem["idle_sessions"]
    lines += [
        "  idle sessions this machine holds = (total RAM - RAM used by everything else) / "
        "per-session memory:",
        f"    container + shim + controller: ({box['total_mib']:.0f} MiB - "
        f"{box['other_mib']:.0f} MiB) / {mem['per_session_all_in_mib']:.1f} MiB "
        f"= {mem['capacity_idle_sessions']}",
        f"    container memory alone:        ({box['total_mib']:.0f} MiB - {other_c:.0f} MiB) / "
        f"{per['mean']:.1f} MiB = {mem['capacity_container_only']}",
        f"    worst case, every session at its O16N_CONTAINER_MEMORY limit: "
        f"({box['total_mib']:.0f} MiB - {box['other_mib']:.0f} MiB) / "
        f"{mem['container_memory_limit_mib']:.0f} MiB = {mem['capacity_at_limit']}",
        "",
        "targets",
    ]
    for target in figures["targets"]:
        verdict = "PASS" if target["pass"] else "MISS"
        lines.append(
            f"  {verdict}  {target['what']}: {target['ms']:.2f} ms "
            f"(target ≤ {target['target_ms']:g} ms)"
        )
    lines.append("ratios: > 1 is slower for latency, < 1 is slower for requests/s")
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20, help="POST /sessions samples of each (20)")
    parser.add_argument(
        "--requests", type=int, default=2000, help="sequential execute requests at c=1 (2000)"
    )
    parser.add_argument(
        "--warmup-requests", type=int, default=200, help="unrecorded execute requests first (200)"
    )
    parser.add_argument(
        "--duration", type=float, default=5.0, help="seconds per concurrent execute run (5)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=4, help="clients of the concurrent runs (4)"
    )
    parser.add_argument("--idle", type=int, default=20, help="idle sessions for memory (20)")
    parser.add_argument(
        "--pool-size", type=int, default=2, help="O16N_WARM_POOL_SIZE of the warm server (2)"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=1.0,
        help="seconds a warm container runs before a sample may take it (1.0)",
    )
    parser.add_argument(
        "--image", help="runtime image (default: o16n-runtime:<hash of runtime_image/>)"
    )
    args = parser.parse_args(argv)
    if min(args.n, args.requests, args.concurrency, args.idle, args.pool_size) < 1:
        parser.error("--n, --requests, --concurrency, --idle and --pool-size must be at least 1")
    if args.duration <= 0 or args.settle < 0 or args.warmup_requests < 0:
        parser.error("--duration must be positive, --settle and --warmup-requests not negative")
    image = args.image or default_tag()
    if (unable := preflight("sessions", ["docker"], image)) is not None:
        return unable
    interrupt_on_sigterm(asyncio_run=True)
    try:
        figures = run(args, image)
    except (BenchError, KeyboardInterrupt) as exc:
        return failed("sessions", exc)
    figures["ratios"] = ratios(figures)
    figures["targets"] = targets(figures)
    figures["meta"] = run_meta(
        "sessions",
        argv=sys.argv[1:] if argv is None else argv,
        n=args.n,
        requests=args.requests,
        warmup_requests=args.warmup_requests,
        duration_s=args.duration,
        concurrency=args.concurrency,
        idle=args.idle,
        pool_size=args.pool_size,
        settle_s=args.settle,
        image=image,
        ram_mib=meminfo()["MemTotal"] / MIB,
        aiohttp=aiohttp.__version__,
    )
    return finish("sessions", figures, report(figures, args, image))


if __name__ == "__main__":
    raise SystemExit(main())
