"""Benchmark of idle sessions' memory: what one more idle session costs this machine, and
so how many it holds.

Starts a server (instance ``o16n-bench-idle``, warm pool of ``--pool-size``), waits until
its pool is full and settled, reads the memory of the instance's containers (``docker
stats``: usage without inactive page cache), the PSS of their containerd shims, the
controller's RSS and /proc/meminfo; opens ``--idle`` sessions, each runs ``1+1``, waits
until the pool is full again, and reads them again. Per session = the growth / ``--idle``.
No baseline: the figures are absolute, compared between trees by bench/compare.py.

    .venv/bin/python -m bench.idle [--idle 20] [--pool-size 2] [--tree DIR]

Every container labelled ``o16n.instance=o16n-bench-idle`` is removed at the end.
"""

from __future__ import annotations

import argparse
import re
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from bench._bench import run_bench
from bench._client import Api
from bench._docker import docker_ids, instance_containers, machine_load, wait_settled
from bench._server import BenchError, common_options, start_o16n

INSTANCE = "o16n-bench-idle"
LABEL = f"o16n.instance={INSTANCE}"
MIB = 1024 * 1024
UNITS = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 1024, "MiB": MIB}
UNITS |= {"GiB": 1024 * MIB}


def proc_kib(path: str, field: str) -> int:
    """A ``kB`` field of a /proc file in bytes (0 if unreadable: the shims need root)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return 0
    match = re.search(rf"^{field}:\s+(\d+)", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def reading(pid: int) -> dict[str, float]:
    """Bytes used now by the instance's containers, their shims and the controller, and
    the machine's MemTotal and MemAvailable."""
    ids = instance_containers(LABEL)
    if not ids:  # docker stats without names would show every container
        raise BenchError(f"no running container carries {LABEL}")
    stats = docker_ids("stats", "--no-stream", "--format", "{{.MemUsage}}", *ids)
    used = [m for m in stats if m != "/"][::2]  # "12.3MiB / 2GiB" split on whitespace
    containers = 0.0
    for text in used:
        match = re.fullmatch(r"([0-9.]+)([A-Za-z]+)", text)
        if match is None or match.group(2) not in UNITS:
            raise BenchError(f"cannot read the size {text!r} from docker stats")
        containers += float(match.group(1)) * UNITS[match.group(2)]
    pids = docker_ids("inspect", "--format", "{{.State.Pid}}", *ids)
    parents = [proc_kib(f"/proc/{pid}/status", "PPid") // 1024 for pid in pids]
    shims = sum(proc_kib(f"/proc/{ppid}/smaps_rollup", "Pss") for ppid in parents if ppid)
    return {
        "containers": len(ids),
        "containers_bytes": containers,
        "shims_bytes": shims,
        "controller_bytes": proc_kib(f"/proc/{pid}/status", "VmRSS"),
        "total_bytes": proc_kib("/proc/meminfo", "MemTotal"),
        "available_bytes": proc_kib("/proc/meminfo", "MemAvailable"),
    }


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {"machine_at_start": machine_load(LABEL)}
    password = "bench-" + secrets.token_urlsafe(18)
    env = {"O16N_WARM_POOL_SIZE": str(args.pool_size), "O16N_SERVICE_WARM_POOL_SIZE": "0"}
    env["O16N_SESSIONS_PER_USER"] = str(args.idle + 10)
    server = start_o16n(tmp, password, args.image, instance=INSTANCE, tree=args.tree, env=env)
    try:
        server.wait_ready()
        api = Api(server.url).login(password)
        wait_settled({LABEL: args.pool_size}, 1.0)
        time.sleep(2.0)  # let the agents' start-up garbage settle
        figures["before"] = reading(server.pid)
        print(f"  opening {args.idle} idle sessions ...", file=sys.stderr, flush=True)
        sessions = [api.session() for _ in range(args.idle)]
        for session in sessions:
            api.execute(session, "1+1")
        wait_settled({LABEL: args.pool_size + args.idle}, 1.0)
        time.sleep(2.0)
        figures["after"] = reading(server.pid)
        limit = docker_ids(
            "inspect", "--format", "{{.HostConfig.Memory}}", instance_containers(LABEL)[0]
        )
        figures["container_memory_limit_bytes"] = int(limit[0])
        for session in sessions:
            api.ok("DELETE", f"/sessions/{session}")
        server.check_alive()
        return figures
    finally:
        server.stop()


def summarise(figures: dict[str, Any], args: argparse.Namespace) -> str:
    before, after, n = figures["before"], figures["after"], args.idle
    per = {
        k.removesuffix("_bytes"): (after[k] - before[k]) / n / MIB
        for k in ("containers_bytes", "shims_bytes", "controller_bytes")
    }
    all_in = per["containers"] + per["shims"] + max(per["controller"], 0.0)
    total = after["total_bytes"] / MIB
    other = total - after["available_bytes"] / MIB - all_in * n  # what everything else uses
    limit = figures["container_memory_limit_bytes"] / MIB
    figures["per_session_mib"] = {**per, "all_in": all_in}
    figures["capacity"] = {
        "idle_sessions": int((total - other) // all_in),
        "at_memory_limit": int((total - other) // limit),
    }
    figures["absolute"] = {f"{k}_mib_per_session": v for k, v in figures["per_session_mib"].items()}
    drop = (before["available_bytes"] - after["available_bytes"]) / n / MIB
    return "\n".join(
        [
            f"idle sessions (n={n}, each ran 1+1), warm pool {args.pool_size}: per session",
            f"  container memory (docker stats)  {per['containers']:8.1f} MiB",
            f"  containerd shim PSS              {per['shims']:8.1f} MiB (0 without root)",
            f"  controller RSS                   {per['controller']:+8.2f} MiB",
            f"  all in                           {all_in:8.1f} MiB "
            f"(host MemAvailable drop {drop:.1f} MiB: whole machine, noisy)",
            f"idle sessions this machine holds: ({total:.0f} - {other:.0f} MiB used by everything "
            f"else) / {all_in:.1f} MiB = {figures['capacity']['idle_sessions']}; every session at "
            f"its {limit:.0f} MiB limit: {figures['capacity']['at_memory_limit']}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=20, help="idle sessions opened (20)")
    parser.add_argument("--pool-size", type=int, default=2, help="O16N_WARM_POOL_SIZE (2)")
    common_options(parser)
    args = parser.parse_args(argv)
    if args.idle < 1 or args.pool_size < 1:
        parser.error("--idle and --pool-size must be at least 1")
    return run_bench("idle", args, run, summarise, labels=[LABEL])


if __name__ == "__main__":
    raise SystemExit(main())
