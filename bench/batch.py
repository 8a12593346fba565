"""Benchmark of batch consumption (``POST /api/Iris/V1.0/batch``) against sequential consume
calls of the same rows from one client, same run, same server.

Starts its own o16n server (``python -m controller serve``, fresh data dir under /tmp, free
port, random admin password, instance ``o16n-bench-batch``, service pools of
``--pool-initial`` / ``--pool-max`` containers), logs in, and sets up ``Iris/V1.0`` exactly
as bench/consume.py does (its own functions: a session, two executes, a snapshot, publishing
``iris_species = [names[x] for x in clf.predict([flower_data])]``). Then, after a warm-up of
both paths:

1. **sequential**: ``--sequential`` calls of ``POST /api/Iris/V1.0``, one after another from
   one client (one keep-alive connection), every answer checked;
2. **batch**: ``--rows`` records in one ``POST /api/Iris/V1.0/batch?parallelCount=N``, polled
   with ``showPartialResults=false`` until ``Complete``; every result checked.

Both cycle through the same few real iris measurements. Reports rows/s of each and the
ratio batch / sequential, plus the time to the 202 (the records are stored in SQLite first)
and the CPU per row of the controller and of the service's containers.

    .venv/bin/python -m bench.batch [--rows 10000] [--parallel 2] [--sequential 2000]
                                    [--pool-initial 2] [--pool-max 2] [--image TAG]

Writes bench/results/batch-<timestamp>.json. Every container labelled
``o16n.instance=o16n-bench-batch`` and every image carrying that label is removed at the
end, also after an error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench._docker import machine_load, preflight, scratch_dir
from bench._server import (
    HOST,
    BenchError,
    Server,
    cpu_seconds,
    failed,
    finish,
    interrupt_on_sigterm,
    login,
    percentile,
    run_meta,
    start_o16n,
)
from bench.consume import (
    SERVICE,
    call,
    containers_cpu,
    iris_snapshot,
    ok,
    publish_to_first_consume,
    wait_pool_full,
)

INSTANCE = "o16n-bench-batch"
LABEL = f"o16n.instance={INSTANCE}"
VERSION = "V1.0"

#: Real iris measurements (rows 0, 50, 100, 1, 51, 101 of scikit-learn's data set) and their
#: species; the SVC the service trains classifies each of them correctly.
ROWS: list[tuple[list[float], str]] = [
    ([5.1, 3.5, 1.4, 0.2], "I. setosa"),
    ([7.0, 3.2, 4.7, 1.4], "I. versicolor"),
    ([6.3, 3.3, 6.0, 2.5], "I. virginica"),
    ([4.9, 3.0, 1.4, 0.2], "I. setosa"),
    ([6.4, 3.2, 4.5, 1.5], "I. versicolor"),
    ([5.8, 2.7, 5.1, 1.9], "I. virginica"),
]


def record(i: int) -> dict[str, Any]:
    return {"flower_data": ROWS[i % len(ROWS)][0]}


def expected(i: int) -> list[str]:
    return [ROWS[i % len(ROWS)][1]]


def result_ok(answer: Any, i: int) -> bool:
    return (
        isinstance(answer, dict)
        and answer.get("success") is True
        and (answer.get("outputParameters") or {}).get("iris_species") == expected(i)
    )


# --- HTTP ---------------------------------------------------------------------------------


class Client:
    """One keep-alive HTTP/1.1 connection with the bearer token (what a simple sequential
    client does). Requests follow each other closely, so it never idles long enough for the
    server to close it; it does not retry (a retried batch POST would start a second batch)."""

    def __init__(self, server: Server, token: str) -> None:
        self._headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        self._conn = http.client.HTTPConnection(HOST, server.port, timeout=120)

    def send(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        try:
            self._conn.request(method, path, body=body, headers=self._headers)
            response = self._conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise BenchError(f"{method} {path.split('?')[0]}: {exc!r}") from None

    def json(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        status, raw = self.send(method, path, body)
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def close(self) -> None:
        self._conn.close()


class RawClient:
    """The leanest sequential client: one keep-alive TCP connection (no Nagle), requests
    built in advance, answers read by their Content-Length. Its own cost per call sits in
    the sequential figure, so it is kept far below the server's."""

    def __init__(self, server: Server) -> None:
        try:
            self._sock = socket.create_connection((HOST, server.port), timeout=120)
        except OSError as exc:
            raise BenchError(f"connecting to {server.name}: {exc!r}") from None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""

    @staticmethod
    def request(path: str, token: str, body: bytes) -> bytes:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    def _more(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise BenchError("the server closed the connection")
        self._buffer += chunk

    def send(self, request: bytes) -> tuple[int, bytes]:
        try:
            self._sock.sendall(request)
            while (end := self._buffer.find(b"\r\n\r\n")) < 0:
                self._more()
            head, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            length = next(
                (
                    int(line.split(":", 1)[1])
                    for line in lines[1:]
                    if line.lower().startswith("content-length:")
                ),
                None,
            )
            if length is None:
                raise BenchError(f"an answer without Content-Length: {head[:300]!r}")
            while len(self._buffer) < length:
                self._more()
            body, self._buffer = self._buffer[:length], self._buffer[length:]
            return status, body
        except OSError as exc:
            raise BenchError(f"sequential client: {exc!r}") from None

    def close(self) -> None:
        self._sock.close()


# --- the two ways of consuming ------------------------------------------------------------


def sequential(server: Server, token: str, calls: int, containers: list[str]) -> dict[str, Any]:
    """``calls`` consume requests one after another; every answer checked."""
    path = f"/api/{SERVICE}/{VERSION}"
    requests = [
        RawClient.request(path, token, json.dumps(record(i), separators=(",", ":")).encode())
        for i in range(len(ROWS))
    ]
    client = RawClient(server)
    latencies: list[float] = []
    try:
        cpu_server, cpu_client = cpu_seconds(server.pid), time.process_time()
        in_containers = containers_cpu(containers)
        started = time.perf_counter()
        for i in range(calls):
            sent = time.perf_counter()
            status, raw = client.send(requests[i % len(requests)])
            latencies.append(time.perf_counter() - sent)
            answer = json.loads(raw) if status == 200 else raw[:400]
            if status != 200 or not result_ok(answer, i):
                raise BenchError(f"sequential call {i}: HTTP {status}: {str(answer)[:400]}")
        elapsed = time.perf_counter() - started
        server_cpu = cpu_seconds(server.pid) - cpu_server
        client_cpu = time.process_time() - cpu_client
        after = containers_cpu(containers)
    finally:
        client.close()
    figures: dict[str, Any] = {
        "rows": calls,
        "seconds": elapsed,
        "rows_per_s": calls / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p90_ms": percentile(latencies, 90) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies) * 1000,
        "controller_cpu_us_per_row": server_cpu / calls * 1e6,
        "client_cpu_us_per_row": client_cpu / calls * 1e6,
    }
    if containers and in_containers is not None and after is not None:
        figures["containers_cpu_us_per_row"] = (after - in_containers) / calls * 1e6
    return figures


def batch_status(client: Client, batch_id: str) -> dict[str, Any]:
    path = f"/api/{SERVICE}/{VERSION}/batch/{batch_id}?showPartialResults=false"
    status, answer = client.json("GET", path)
    if status != 200 or not isinstance(answer, dict):
        raise BenchError(f"GET {path}: HTTP {status}: {str(answer)[:400]}")
    return answer


def batch_request(rows: int, parallel: int) -> tuple[str, bytes]:
    """The batch's path and body: ``rows`` records cycling through ROWS."""
    body = json.dumps([record(i) for i in range(rows)], separators=(",", ":")).encode()
    return f"/api/{SERVICE}/{VERSION}/batch?parallelCount={parallel}", body


def run_batch(
    server: Server,
    token: str,
    rows: int,
    args: argparse.Namespace,
    containers: list[str],
    batches: list[str],
) -> dict[str, Any]:
    """POST ``rows`` records, poll until Complete, check every result. The id goes into
    ``batches`` at once, so that the caller can delete the execution after a failure."""
    path, body = batch_request(rows, args.parallel)
    client = Client(server, token)
    try:
        cpu_start = cpu_seconds(server.pid)
        in_containers = containers_cpu(containers)
        wall_start, started = time.time(), time.perf_counter()
        status, answer = client.json("POST", path, body)
        accepted = time.perf_counter()
        wall_accepted = time.time()
        cpu_accepted = cpu_seconds(server.pid)
        if status != 202 or not isinstance(answer, dict) or "batchExecutionId" not in answer:
            raise BenchError(f"POST {path}: HTTP {status}: {str(answer)[:400]}")
        batch_id = str(answer["batchExecutionId"])
        batches.append(batch_id)
        if answer.get("BatchExecutionId") != batch_id:
            raise BenchError(f"POST {path}: the two id fields differ: {answer}")

        progress: list[tuple[float, int]] = []  # (seconds since the 202, completedItemCount)
        last_change, last_count, polls = accepted, -1, 0
        while True:
            time.sleep(args.poll_interval)
            state = batch_status(client, batch_id)
            now = time.perf_counter()
            polls += 1
            count = int(state.get("completedItemCount", -1))
            progress.append((now - accepted, count))
            if state.get("state") == "Complete":
                break
            if state.get("state") not in ("Pending", "InProgress"):
                raise BenchError(
                    f"batch {batch_id} ended {state.get('state')!r} at {count}/{rows} records "
                    f"(answer {str(state)[:300]}):\n{server.log_tail()}"
                )
            if count != last_count:
                last_change, last_count = now, count
            elif now - last_change > args.stall_timeout:
                raise BenchError(
                    f"batch {batch_id} stalled: completedItemCount {count}/{rows} and state "
                    f"{state.get('state')!r} for {args.stall_timeout:g} s:\n{server.log_tail()}"
                )
            server.check_alive()
        finished = now
        cpu_end = cpu_seconds(server.pid)
        after = containers_cpu(containers)
    finally:
        client.close()

    results = state.get("batchExecutionResults")
    if state.get("totalItemCount") != rows or state.get("completedItemCount") != rows:
        raise BenchError(
            f"batch {batch_id} is Complete with totalItemCount {state.get('totalItemCount')} "
            f"and completedItemCount {state.get('completedItemCount')}, expected {rows}"
        )
    if not isinstance(results, list) or len(results) != rows:
        size = len(results) if isinstance(results, list) else type(results).__name__
        raise BenchError(f"batch {batch_id} is Complete with {size} results, expected {rows}")
    bad = [i for i, result in enumerate(results) if not result_ok(result, i)]
    if bad:
        examples = "; ".join(f"[{i}] {str(results[i])[:200]}" for i in bad[:3])
        raise BenchError(f"batch {batch_id}: {len(bad)} of {rows} results are wrong: {examples}")
    spot = [0, 1, 2, rows // 2, rows - 1]
    run_s = finished - accepted
    figures: dict[str, Any] = {
        "id": batch_id,
        "rows": rows,
        "parallel_count": args.parallel,
        "post_to_202_s": accepted - started,
        "seconds": run_s,
        "rows_per_s": rows / run_s,
        "rows_per_s_incl_post": rows / (finished - started),
        "body_bytes": len(body),
        "polls": polls,
        "poll_interval_s": args.poll_interval,
        "controller_cpu_us_per_row_storing": (cpu_accepted - cpu_start) / rows * 1e6,
        "controller_cpu_us_per_row_running": (cpu_end - cpu_accepted) / rows * 1e6,
        "controller_cpu_us_per_row": (cpu_end - cpu_start) / rows * 1e6,
        "all_success": True,
        "all_species_as_expected": True,
        "spot_check": {str(i): results[i]["outputParameters"]["iris_species"] for i in spot},
        "progress": [[round(t, 3), n] for t, n in progress],
    }
    if containers and in_containers is not None and after is not None:
        figures["containers_cpu_us_per_row"] = (after - in_containers) / rows * 1e6
    steady = steady_rate(progress, rows)
    if steady is not None:
        figures["rows_per_s_10_to_90pct"] = steady
    figures.update(server_times(server, batch_id, wall_start, wall_accepted, rows))
    return figures


def steady_rate(progress: list[tuple[float, int]], rows: int) -> float | None:
    """Rows/s between the first polls that saw 10 % and 90 % done (start and end excluded)."""
    low = next(((t, n) for t, n in progress if n >= rows * 0.1), None)
    high = next(((t, n) for t, n in progress if n >= rows * 0.9), None)
    if low is None or high is None or high[0] <= low[0]:
        return None
    return (high[1] - low[1]) / (high[0] - low[0])


def server_times(
    server: Server, batch_id: str, wall_start: float, wall_accepted: float, rows: int
) -> dict[str, Any]:
    """The batch's own timestamps from the controller's SQLite (read-only; same machine, so
    the same wall clock as ours): the run without the poll interval's granularity."""
    path = server.log.parent / server.name / "o16n.sqlite3"
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            row = db.execute(
                "SELECT created_at, finished_at FROM batches WHERE id = ?", (batch_id,)
            ).fetchone()
    except sqlite3.Error as exc:
        return {"server_times_error": str(exc)}
    if row is None or row[1] is None:
        return {"server_times_error": f"no finished_at for {batch_id}"}
    created, finished = float(row[0]), float(row[1])
    return {
        "server_created_after_post_s": created - wall_start,
        "server_202_to_finished_s": finished - wall_accepted,
        "server_rows_per_s": rows / (finished - wall_accepted),
    }


def delete_batch(url: str, token: str, batch_id: str) -> None:
    status, answer = call(
        "DELETE", f"{url}/api/{SERVICE}/{VERSION}/batch/{batch_id}", token=token, timeout=30
    )
    if status != 200:
        raise BenchError(f"DELETE batch {batch_id}: HTTP {status}: {str(answer)[:300]}")


# --- the instance's containers ------------------------------------------------------------


def instance_containers() -> dict[str, str]:
    """Full id → ``kind/id`` label of every running container of our instance: the
    version's pool (started for it, kind ``service``, or taken from the services' warm pool,
    kind ``warm``, id ``services``), the spare warm containers, the sessions' warm pool."""
    listed = subprocess.run(
        [
            "docker",
            "ps",
            "--no-trunc",
            "--filter",
            f"label={LABEL}",
            "--format",
            '{{.ID}} {{.Label "o16n.kind"}}/{{.Label "o16n.id"}}',
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return dict(line.split(" ", 1) for line in listed.stdout.splitlines() if " " in line)


def wait_quiet(ids: list[str], timeout: float = 120, busy: float = 0.02) -> float | None:
    """Until the containers together use less than ``busy`` of a core over a second (none
    is still starting or preloading modules), so that the CPU measured afterwards is the
    load's. The seconds waited, or None when they did not settle (or no cgroup figures)."""
    started = time.monotonic()
    before = containers_cpu(ids)
    while before is not None and time.monotonic() - started < timeout:
        time.sleep(1)
        after = containers_cpu(ids)
        if after is None:
            return None
        if after - before < busy:
            return time.monotonic() - started
        before = after
    return None


# --- run ----------------------------------------------------------------------------------


def say(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {"machine_at_start": machine_load(LABEL)}
    password = "bench-" + secrets.token_urlsafe(18)
    env = {
        "O16N_SERVICE_POOL_INITIAL": str(args.pool_initial),
        "O16N_SERVICE_POOL_MAX": str(args.pool_max),
    }
    # its own session: Ctrl-C reaches only this script, which then still cleans up through it
    o16n = start_o16n(tmp, password, args.image, instance=INSTANCE, env=env, detach=True)
    token: str | None = None
    published = False
    batches: list[str] = []
    try:
        o16n.wait_ready()
        token = login(o16n, password)
        say("Iris session, executes, snapshot ...")
        snapshot_id, figures["setup"] = iris_snapshot(o16n.url, token)
        published = True  # from here on, delete the version at the end (a 404 is harmless)
        figures["publish_first_consume"] = publish_to_first_consume(
            o16n, token, snapshot_id, VERSION
        )
        ok("DELETE", f"{o16n.url}/snapshots/{snapshot_id}", token=token)
        wait_pool_full(o16n.url, token, VERSION, args.pool_initial)

        if args.warmup:
            say(f"warm-up: {args.warmup} sequential calls ...")
            sequential(o16n, token, args.warmup, [])
        if args.warmup_rows:
            say(f"warm-up: a batch of {args.warmup_rows} rows ...")
            warm = run_batch(o16n, token, args.warmup_rows, args, [], batches)
            delete_batch(o16n.url, token, warm["id"])
            batches.remove(warm["id"])
        # a pool that may grow has grown during the warm-up batch: let its new containers
        # finish starting (restoring the workspace imports scikit-learn) first
        grown = min(args.pool_max, args.parallel) if args.warmup_rows else args.pool_initial
        figures["pool_grown_before_runs"] = wait_pool_full(
            o16n.url, token, VERSION, max(grown, args.pool_initial), fatal=False
        )

        found = instance_containers()
        containers = sorted(found)
        figures["containers"] = sorted(found.values())
        figures["containers_quiet_after_s"] = wait_quiet(containers)
        say(f"sequential: {args.sequential} calls ...")
        figures["sequential"] = sequential(o16n, token, args.sequential, containers)
        say(f"batch: {args.rows} rows, parallelCount {args.parallel} ...")
        figures["batch"] = run_batch(o16n, token, args.rows, args, containers, batches)
        if set(instance_containers()) != set(found):  # then the CPU figures miss some
            figures["containers_changed"] = sorted(instance_containers().values())
        o16n.check_alive()
        figures["pool_after"] = ok(
            "GET", f"{o16n.url}/services/{SERVICE}/{VERSION}/pool", token=token
        )[0]
        figures["machine_at_end"] = machine_load(LABEL)
        return figures
    finally:
        # through the API first (the server runs in its own session, so it survived a
        # Ctrl-C): stop the batch, delete the version with its containers and image tag
        if token is not None and o16n.process.poll() is None:
            for batch_id in batches:
                try:
                    delete_batch(o16n.url, token, batch_id)
                except BenchError as exc:
                    print(f"bench.batch: cleanup: {exc}", file=sys.stderr)
            if published:
                status, answer = call(
                    "DELETE", f"{o16n.url}/services/{SERVICE}/{VERSION}", token=token, timeout=60
                )
                if status not in (200, 404):
                    print(
                        f"bench.batch: cleanup: DELETE {SERVICE}/{VERSION}: HTTP {status}: "
                        f"{str(answer)[:300]}",
                        file=sys.stderr,
                    )
        o16n.stop()


# --- report -------------------------------------------------------------------------------


def report(figures: dict[str, Any], args: argparse.Namespace) -> str:
    seq, bat = figures["sequential"], figures["batch"]
    lines = [
        f"Iris/{VERSION}: one batch of {bat['rows']} rows (parallelCount {args.parallel}) vs "
        f"{seq['rows']} sequential consume calls (1 client, keep-alive); pool "
        f"{args.pool_initial}/{args.pool_max}, {os.cpu_count()} cores",
        f"{'':36}{'batch':>12}{'sequential':>12}{'batch/seq':>12}",
    ]
    rows = [("rows/s", bat["rows_per_s"], seq["rows_per_s"])]
    rows.append(
        (
            "controller CPU/row (µs)",
            bat["controller_cpu_us_per_row"],
            seq["controller_cpu_us_per_row"],
        )
    )
    if "containers_cpu_us_per_row" in bat and "containers_cpu_us_per_row" in seq:
        rows.append(
            (
                "containers CPU/row (µs)",
                bat["containers_cpu_us_per_row"],
                seq["containers_cpu_us_per_row"],
            )
        )
    for label, mine, theirs in rows:
        ratio = f"{mine / theirs:12.2f}" if theirs else f"{'n/a':>12}"
        lines.append(f"{label:36}{mine:12.1f}{theirs:12.1f}{ratio}")
    lines.append(
        f"RATIO batch rows/s / sequential rows/s: {figures['ratio']:.2f} "
        f"({bat['rows_per_s']:.0f} vs {seq['rows_per_s']:.0f} rows/s)"
    )
    lines.append(
        f"batch: POST → 202 {bat['post_to_202_s'] * 1000:.0f} ms for {bat['rows']} records "
        f"({bat['body_bytes'] / 1024:.0f} KiB; controller CPU "
        f"{bat['controller_cpu_us_per_row_storing']:.1f} µs/row storing, "
        f"{bat['controller_cpu_us_per_row_running']:.1f} µs/row running); "
        f"202 → Complete {bat['seconds']:.2f} s"
    )
    extra = [f"{bat['rows_per_s_incl_post']:.0f} rows/s including the POST"]
    if "rows_per_s_10_to_90pct" in bat:
        extra.append(f"{bat['rows_per_s_10_to_90pct']:.0f} rows/s from 10 % to 90 % done")
    if "server_rows_per_s" in bat:
        extra.append(
            f"{bat['server_rows_per_s']:.0f} rows/s from the 202 to the server's finished_at "
            f"({bat['server_202_to_finished_s']:.2f} s)"
        )
    lines.append("batch: " + "; ".join(extra))
    lines.append(
        f"batch: polled every {bat['poll_interval_s'] * 1000:.0f} ms ({bat['polls']} polls); "
        f"all {bat['rows']} results success true with the expected species; spot check "
        + ", ".join(f"[{i}] {v[0]}" for i, v in bat["spot_check"].items())
    )
    lines.append(
        f"sequential: p50 {seq['p50_ms']:.3f} ms, p90 {seq['p90_ms']:.3f} ms, p99 "
        f"{seq['p99_ms']:.3f} ms, max {seq['max_ms']:.1f} ms; client CPU "
        f"{seq['client_cpu_us_per_row']:.0f} µs/call; every answer checked"
    )
    kinds: dict[str, int] = {}
    for kind in figures["containers"]:
        kinds[kind] = kinds.get(kind, 0) + 1
    quiet = figures["containers_quiet_after_s"]
    lines.append(
        f"containers CPU: all {len(figures['containers'])} of the instance ("
        + ", ".join(f"{kind} x{n}" for kind, n in sorted(kinds.items()))
        + "), "
        + (f"idle {quiet:.0f} s after the warm-up" if quiet is not None else "NOT idle before")
        + (
            "; CHANGED during the runs: " + ", ".join(figures["containers_changed"])
            if "containers_changed" in figures
            else ""
        )
    )
    first = figures["publish_first_consume"]
    setup = figures["setup"]
    lines.append(
        "setup (s): "
        + ", ".join(f"{k.removesuffix('_s')} {v:.2f}" for k, v in setup.items())
        + f", publish → first consume {first['first_consume_s']:.2f}"
    )
    start, end = figures["machine_at_start"], figures["machine_at_end"]
    lines.append(
        f"machine: load average {start['load_1min']:.2f} at start, {end['load_1min']:.2f} at "
        f"end; {start['other_containers']} / {end['other_containers']} containers of others"
    )
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10000, help="records in the batch (10000)")
    parser.add_argument("--parallel", type=int, default=2, help="parallelCount of the batch (2)")
    parser.add_argument(
        "--sequential", type=int, default=2000, help="sequential consume calls timed (2000)"
    )
    parser.add_argument(
        "--warmup", type=int, default=200, help="sequential calls before, not recorded (200)"
    )
    parser.add_argument(
        "--warmup-rows", type=int, default=200, help="rows of a warm-up batch, not recorded (200)"
    )
    parser.add_argument("--pool-initial", type=int, default=2, help="InitialPoolSize (2)")
    parser.add_argument("--pool-max", type=int, default=2, help="MaxPoolSize (2)")
    parser.add_argument(
        "--poll-interval", type=float, default=0.05, help="seconds between status polls (0.05)"
    )
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=120,
        help="fail when completedItemCount does not move for this many seconds (120)",
    )
    parser.add_argument(
        "--image", help="O16N_RUNTIME_IMAGE for the server (default: the tag of runtime_image/)"
    )
    args = parser.parse_args(argv)
    if min(args.rows, args.parallel, args.sequential) < 1:
        parser.error("--rows, --parallel and --sequential must be >= 1")
    if min(args.warmup, args.warmup_rows) < 0:
        parser.error("--warmup and --warmup-rows must be >= 0")
    if args.pool_initial < 1 or args.pool_max < args.pool_initial:
        parser.error("need 1 <= --pool-initial <= --pool-max")
    if args.poll_interval <= 0 or args.stall_timeout <= 0:
        parser.error("--poll-interval and --stall-timeout must be > 0")
    if (unable := preflight("batch", ["docker"], args.image)) is not None:
        return unable

    interrupt_on_sigterm()  # clean up on SIGTERM too
    try:
        with scratch_dir("batch", [LABEL], images=True) as tmp:
            figures = run(args, tmp)
    except (BenchError, KeyboardInterrupt) as exc:
        return failed("batch", exc)

    figures["ratio"] = figures["batch"]["rows_per_s"] / figures["sequential"]["rows_per_s"]
    figures["meta"] = run_meta(
        "batch",
        rows=args.rows,
        parallel_count=args.parallel,
        sequential_calls=args.sequential,
        warmup_calls=args.warmup,
        warmup_rows=args.warmup_rows,
        pool_initial=args.pool_initial,
        pool_max=args.pool_max,
        poll_interval_s=args.poll_interval,
        runtime_image=args.image,
    )
    return finish("batch", figures, report(figures, args))


if __name__ == "__main__":
    raise SystemExit(main())
