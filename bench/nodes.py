"""Benchmark of compute nodes: sessions and services over the local engine and two real
engines reached over SSH (issue 15's "Measure"), all through the HTTP API, in one run.

Starts two nodes with ``tests/nodes/engines.py`` (a network namespace, a dockerd and an
sshd each; the runtime image loaded into both) and one ``o16n serve`` (instance
``o16n-bench-nodes``) that has them as ``O16N_COMPUTE_NODES``, warm pools at their
defaults. Then, each figure from the same server:

1. **placement**: ``--sessions`` sessions created one after another, counted per node
   (``GET /admin/nodes``), then deleted;
2. **round trip**: ``execute 1+1`` at c=1 on a session of the local node and one of a remote
   node (drains force placement), ``--rounds`` interleaved rounds of ``--requests``;
3. **warm create**: ``POST /sessions`` from a full warm pool of the local node and of a
   remote one (all other nodes drained), alternating, the pool settled before each sample;
4. **node loss**: ``--lost-sessions`` sessions on one remote node, its link cut (``ip link
   set … down``), each session's execute polled every 100 ms until it answers 410; the link
   restored, until the node is ``up`` and its old containers are gone;
5. **consume while a node is cut**: the Iris service (bench/_iris.py) with a pool of
   ``--pool`` containers over the two remote nodes, ``--clients`` closed-loop clients for
   ``--consume-seconds``, the link of the node holding most of the pool cut
   ``--cut-after`` s in: success ratio, failures by kind, longest gap without a success;
6. **image moves**: a snapshot made on node A (a file written; and a pristine one),
   published and first consumed with only node B taking containers: the time to the first
   right answer and the bytes moved (the controller's "image moved between compute nodes"
   log lines), beside a second publish of the same snapshot on B (nothing to move).

    .venv/bin/python -m bench.nodes      # needs root and `make nodes` (sshd, dockerd, ...)

The nodes are stopped at the end whatever happens (their containers go with them), and
the local engine's containers and images of the instance are swept.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import _iris as iris
from bench._bench import run_bench
from bench._client import Api
from bench._docker import machine_line, machine_load
from bench._server import (
    RESULTS_DIR,
    BenchError,
    Server,
    common_options,
    percentile,
    runtime_tag,
    say,
    start_o16n,
    summary,
)
from tests.nodes import engines

INSTANCE = "o16n-bench-nodes"
LABEL = f"o16n.instance={INSTANCE}"
LOCAL = "local"
MOVED_LINE = "image moved between compute nodes"
TOOLS = ("docker", "ip", "nsenter", "ssh", "ssh-keygen", "dockerd", "containerd")


# --- pure helpers (tested in tests/bench/test_nodes.py) ---------------------------------


def counts_over(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Containers per node added since ``before`` (what a phase placed there)."""
    return {name: after.get(name, 0) - before.get(name, 0) for name in after}


def longest_gap(successes: list[float], start: float, end: float) -> float:
    """The longest time without a success between ``start`` and ``end`` (the load's
    bounds): the gaps between consecutive successes, and before the first and after the
    last."""
    edges = [start, *sorted(t for t in successes if start <= t <= end), end]
    return max(b - a for a, b in itertools.pairwise(edges))


def outcome(status: int | None, body: bytes) -> str:
    """A consume answer's kind: ``ok`` (200, ``success`` true), ``success_false`` (200
    otherwise), ``503``, ``5xx``, ``4xx``, or ``connection`` (no answer: ``status`` None)."""
    if status is None:
        return "connection"
    if status == 200:
        try:
            answer = json.loads(body)
        except ValueError:
            return "success_false"
        return (
            "ok"
            if isinstance(answer, dict) and answer.get("success") is True
            else ("success_false")
        )
    if status == 503:
        return "503"
    return "5xx" if status >= 500 else "4xx"


def moved_lines(log: Path, offset: int) -> list[dict[str, Any]]:
    """The controller's "image moved between compute nodes" lines (JSON log format) in
    ``log`` from byte ``offset`` on: image, bytes, seconds."""
    found = []
    with log.open("rb") as text:
        text.seek(offset)
        for line in text:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("msg") == MOVED_LINE:
                found.append({k: entry.get(k) for k in ("image", "bytes", "seconds")})
    return found


def warm_pools(metrics: str) -> tuple[dict[str, int], dict[str, int]]:
    """Ready containers and target size of each warm pool, from ``/metrics``' text."""
    ready: dict[str, int] = {}
    target: dict[str, int] = {}
    for line in metrics.splitlines():
        for name, into in (("o16n_warm_pool_containers", ready), ("o16n_warm_pool_target", target)):
            if line.startswith(name + "{"):
                labels, _, value = line.rpartition(" ")
                pool = labels.partition('pool="')[2].partition('"')[0]
                into[pool] = int(float(value))
    return ready, target


def tally(items: Iterable[object]) -> dict[str, int]:
    """How many of each (as text: JSON keys)."""
    counts: dict[str, int] = {}
    for item in items:
        counts[str(item)] = counts.get(str(item), 0) + 1
    return counts


def spread(values: list[float]) -> dict[str, float]:
    """min, median and max (seconds)."""
    return {"min": min(values), "median": percentile(values, 50), "max": max(values)}


# --- the cluster: nodes, server, the API's view of them ---------------------------------


class Cluster:
    """The server's API and the nodes it has, by entry: ``local`` and each node's
    ``ssh://…`` (``self.remote[i]`` is the engines' node behind ``self.entries[i + 1]``)."""

    def __init__(self, api: Api, server: Server, nodes: list[engines.Node]) -> None:
        self.api, self.server, self.remote = api, server, nodes
        self.entries = [LOCAL, *(node.ssh_entry for node in nodes)]
        self.names: dict[str, str] = {}

    def describe(self) -> dict[str, dict[str, Any]]:
        """``GET /admin/nodes`` by entry."""
        return {n["entry"]: n for n in self.api.ok("GET", "/admin/nodes")["nodes"]}

    def totals(self) -> dict[str, int]:
        """This instance's containers per node, all kinds (``/admin/nodes``)."""
        return {e: sum(n["containers"].values()) for e, n in self.describe().items()}

    def only(self, *entries: str) -> None:
        """Let only ``entries`` take new containers: drain the others, undrain those."""
        for entry, node in self.describe().items():
            self.names[entry] = node["name"]
            wanted = entry in entries
            if node["draining"] == wanted:
                method = "DELETE" if wanted else "POST"
                self.api.ok(method, f"/admin/nodes/{node['name']}/drain")

    def wait_up(self, timeout: float = 120) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            nodes = self.describe()
            if len(nodes) == len(self.entries) and all(n["state"] == "up" for n in nodes.values()):
                return nodes
            if time.monotonic() > deadline:
                raise BenchError(f"the compute nodes are not all up: {nodes}")
            self.server.check_alive()
            time.sleep(0.2)

    def pools_full(self, nodes: dict[str, dict[str, Any]]) -> bool:
        """Whether each warm pool (sessions', services') has its size ready on every node
        that is up (``/metrics``: ``o16n_warm_pool_containers`` counts them all, a drained
        node's too, which stay ready; ``o16n_warm_pool_target`` is the size times the
        nodes taking containers)."""
        status, raw = self.api.send("GET", "/metrics")
        if status != 200:
            raise BenchError(f"GET /metrics: HTTP {status}: {raw[:200]!r}")
        ready, target = warm_pools(raw.decode())
        up = sum(n["state"] == "up" for n in nodes.values())
        taking = sum(n["state"] == "up" and not n["draining"] for n in nodes.values())
        return taking > 0 and all(
            ready.get(pool, 0) * taking >= wanted * up for pool, wanted in target.items()
        )

    def wait_stable(self, seconds: float = 0.5, timeout: float = 240) -> dict[str, int]:
        """Until the warm pools are full (:meth:`pools_full`), each node's container count
        stayed the same for ``seconds`` and its engine runs that many of the instance's
        containers; that count per node."""
        deadline = time.monotonic() + timeout
        last: dict[str, int] = {}
        since = time.monotonic()
        while time.monotonic() < deadline:
            nodes = self.describe()
            now = {e: sum(n["containers"].values()) for e, n in nodes.items()}
            running = {e: len(self.engine_ids(e)) for e in self.entries}
            if now != last or running != now or not self.pools_full(nodes):
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= seconds:
                return now
            time.sleep(0.2)
        raise BenchError(f"the nodes' containers did not settle: {last}")

    def docker(self, entry: str, *args: str) -> list[str]:
        """Words ``docker <args>`` prints against ``entry``'s engine (context, not driving)."""
        host = [] if entry == LOCAL else ["-H", f"unix://{self.node(entry).engine_socket}"]
        done = subprocess.run(
            ["docker", *host, *args], capture_output=True, text=True, check=False, timeout=60
        )
        return done.stdout.split()

    def engine_ids(self, entry: str) -> list[str]:
        """The instance's running containers on ``entry``'s engine."""
        return self.docker(
            entry,
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            f"label={LABEL}",
            "--filter",
            "status=running",
        )

    def youngest_age(self, entry: str) -> float:
        """Seconds since the youngest of the instance's containers on ``entry`` started."""
        ids = self.engine_ids(entry)
        if not ids:
            return float("inf")
        started = self.docker(entry, "inspect", "--format", "{{.State.StartedAt}}", *ids)
        stamps = [parse_time(s) for s in started]
        return time.time() - max(stamps)

    def serving(self) -> dict[str, int]:
        """Per node, the running containers of a published service's own image (a pool's
        containers: a snapshot's service does not start from the warm pool)."""
        return {
            entry: sum(
                image.startswith("o16n-service:")
                for image in self.docker(
                    entry, "ps", "--filter", f"label={LABEL}", "--format", "{{.Image}}"
                )
            )
            for entry in self.entries
        }

    def node(self, entry: str) -> engines.Node:
        return self.remote[self.entries.index(entry) - 1]


def parse_time(stamp: str) -> float:
    """Docker's RFC 3339 time with nanoseconds, as a Unix time."""
    from datetime import datetime

    head, _, frac = stamp.rstrip("Z").partition(".")
    whole = datetime.fromisoformat(head + "+00:00").timestamp()
    return whole + (float("0." + frac[:6]) if frac else 0.0)


# --- the phases ---------------------------------------------------------------------------


def placement(c: Cluster, args: argparse.Namespace, idle: dict[str, int]) -> dict[str, Any]:
    """``--sessions`` sessions over the three nodes, counted per node, then deleted."""
    c.only(*c.entries)
    started = time.perf_counter()
    sessions = [c.api.session() for _ in range(args.sessions)]
    created = time.perf_counter() - started
    say(f"placement: {len(sessions)} sessions created in {created:.1f} s")
    raw = c.describe()
    after = c.wait_stable()
    per_node = counts_over(idle, after)
    for session in sessions:
        c.api.ok("DELETE", f"/sessions/{session}")
    c.wait_stable()
    return {
        "sessions": len(sessions),
        "per_node": per_node,
        "admin_containers_right_after": {e: n["containers"] for e, n in raw.items()},
        "create_all_s": created,
    }


def round_trip(c: Cluster, args: argparse.Namespace) -> dict[str, Any]:
    """``execute 1+1`` at c=1, a local session against a remote one, interleaved rounds."""
    remote = c.entries[1]
    sessions: dict[str, str] = {}
    for entry in (LOCAL, remote):
        c.only(entry)
        sessions[entry] = c.api.session()
        c.api.execute(sessions[entry], "1+1")
    c.only(*c.entries)
    body = b'{"code":"1+1"}'
    samples: dict[str, list[float]] = {LOCAL: [], remote: []}
    busy: dict[str, float] = {LOCAL: 0.0, remote: 0.0}

    def burst(entry: str, count: int, keep: bool) -> None:
        path = f"/sessions/{sessions[entry]}/execute"
        began = time.perf_counter()
        for _ in range(count):
            sent = time.perf_counter()
            status, raw = c.api.send("POST", path, body)
            took = time.perf_counter() - sent
            if status != 200 or json.loads(raw).get("success") is not True:
                raise BenchError(f"execute on {entry}: HTTP {status}: {raw[:300]!r}")
            if keep:
                samples[entry].append(took)
        if keep:
            busy[entry] += time.perf_counter() - began

    for entry in (LOCAL, remote):
        burst(entry, args.requests // 5, keep=False)  # warm-up
    for i in range(args.rounds):
        order = (LOCAL, remote) if i % 2 == 0 else (remote, LOCAL)
        for entry in order:
            burst(entry, args.requests, keep=True)
        say(
            f"round trip {i + 1}/{args.rounds}: local p50 "
            f"{percentile(samples[LOCAL], 50) * 1000:.2f} ms, remote "
            f"{percentile(samples[remote], 50) * 1000:.2f} ms"
        )
    for session in sessions.values():
        c.api.ok("DELETE", f"/sessions/{session}")
    figures: dict[str, Any] = {"remote_entry": remote}
    for entry, key in ((LOCAL, "local"), (remote, "remote")):
        figures[key] = {
            **{k: v for k, v in summary(samples[entry]).items() if k != "samples_ms"},
            "requests": len(samples[entry]),
            "rps": len(samples[entry]) / busy[entry],
        }
    return figures


def warm_create(c: Cluster, args: argparse.Namespace, idle: dict[str, int]) -> dict[str, Any]:
    """``POST /sessions`` from a full warm pool: the local node's against a remote one's,
    alternating, each sample taken with only that node undrained and its pool settled."""
    remote = c.entries[1]
    samples: dict[str, list[float]] = {LOCAL: [], remote: []}
    deletes: list[float] = []

    def settled(entry: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (
                c.totals()[entry] == idle[entry]
                and len(c.engine_ids(entry)) == idle[entry]
                and c.youngest_age(entry) >= args.settle
            ):
                return
            time.sleep(0.1)
        raise BenchError(f"the warm pool of {entry} did not settle")

    for i in range(args.n + 1):  # the first round is a warm-up
        for entry in (LOCAL, remote) if i % 2 == 0 else (remote, LOCAL):
            c.only(entry)
            settled(entry)
            started = time.perf_counter()
            session = c.api.session()
            took = time.perf_counter() - started
            started = time.perf_counter()
            c.api.ok("DELETE", f"/sessions/{session}")
            if i:
                samples[entry].append(took)
                deletes.append(time.perf_counter() - started)
    c.only(*c.entries)
    say(
        f"warm create: local p50 {percentile(samples[LOCAL], 50) * 1000:.0f} ms, remote "
        f"{percentile(samples[remote], 50) * 1000:.0f} ms"
    )
    return {
        "remote_entry": remote,
        "local": summary(samples[LOCAL]),
        "remote": summary(samples[remote]),
        "delete": summary(deletes),
    }


def node_loss(c: Cluster, args: argparse.Namespace, idle: dict[str, int]) -> dict[str, Any]:
    """Sessions on one remote node; its link cut: when each answers 410; restored: when the
    node is up again with its old containers gone."""
    entry = c.entries[2]
    node = c.node(entry)
    c.only(entry)
    sessions = []
    for _ in range(args.lost_sessions):  # one at a time, the node's pool refilled between
        sessions.append(c.api.session())
        c.api.execute(sessions[-1], "1+1")
        placed = counts_over(idle, c.wait_stable())
    c.only(*c.entries)
    if placed[entry] != len(sessions):
        raise BenchError(f"the sessions did not all go to {entry} alone: {placed}")
    old = set(c.engine_ids(entry))
    answers: dict[str, list[int | None]] = {s: [] for s in sessions}
    gone: dict[str, float] = {}
    messages: dict[str, str] = {}
    errors: list[str] = []  # requests that got no answer: when (after the cut), and why

    def poll(session: str, cut: float) -> None:
        api = Api(c.api.url, c.api.token, timeout=60)
        path = f"/sessions/{session}/execute"
        tick = cut
        try:
            while time.monotonic() - cut < args.loss_timeout:
                status: int | None
                try:
                    status, raw = api.send("POST", path, b'{"code":"1"}')
                except BenchError as exc:
                    status, raw = None, b""
                    errors.append(f"{time.monotonic() - cut:.2f} s: {exc}"[:300])
                answers[session].append(status)
                if status == 410:
                    gone[session] = time.monotonic() - cut
                    messages[session] = str(json.loads(raw).get("message"))
                    return
                tick += 0.1
                time.sleep(max(0.0, tick - time.monotonic()))
        finally:
            api.close()

    say(f"node loss: cutting {entry}'s link, {len(sessions)} sessions there")
    with cut_link(node) as cut:
        threads = [threading.Thread(target=poll, args=(s, cut)) for s in sessions]
        for thread in threads:
            thread.start()
        lost_at = None
        while any(t.is_alive() for t in threads):
            if lost_at is None and c.describe()[entry]["state"] == "lost":
                lost_at = time.monotonic() - cut
            time.sleep(0.1)
        if lost_at is None and c.describe()[entry]["state"] == "lost":
            lost_at = time.monotonic() - cut
        down_for = time.monotonic() - cut
    restored = time.monotonic()
    up_at = back_empty = None
    deadline = restored + args.loss_timeout
    while (up_at is None or back_empty is None) and time.monotonic() < deadline:
        if up_at is None and c.describe()[entry]["state"] == "up":
            up_at = time.monotonic() - restored
        if back_empty is None and not old & set(c.docker(entry, "ps", "-aq", "--no-trunc")):
            back_empty = time.monotonic() - restored
        time.sleep(0.1)
    after = {}
    for session in sessions:
        status, _ = c.api.call("POST", f"/sessions/{session}/execute", {"code": "1"})
        after[session] = status
    times = list(gone.values())
    say(
        f"node loss: 410 after {', '.join(f'{t:.1f}' for t in sorted(times))} s; up again "
        f"{up_at if up_at is None else round(up_at, 1)} s after the link came back"
    )
    return {
        "entry": entry,
        "sessions": len(sessions),
        "answered_410": len(times),
        "cut_to_410_s": spread(times) if times else None,
        "cut_to_lost_state_s": lost_at,
        "link_down_s": down_for,
        "restore_to_up_s": up_at,
        "restore_to_old_containers_gone_s": back_empty,
        "statuses_before_410": tally(a for s in sessions for a in answers[s] if a != 410),
        "message": next(iter(messages.values()), None),
        "no_answer": errors,
        "after_restore_execute_status": sorted(set(after.values())),
    }


def consume_cut(c: Cluster, args: argparse.Namespace) -> dict[str, Any]:
    """Iris with a pool over the two remote nodes; a closed-loop load; one node cut."""
    remote = c.entries[1:]
    c.only(*remote)
    snapshot, _ = iris.snapshot(c.api)
    published = iris.publish(c.api, c.server, snapshot, "V1.0")
    pool = {"InitialPoolSize": args.pool, "MaxPoolSize": args.pool}
    c.api.ok("POST", f"/services/{iris.SERVICE}/V1.0/pool", pool)
    iris.wait_pool(c.api, "V1.0", args.pool)
    c.wait_stable()
    placed = c.serving()
    images = {e: c.docker(e, "images", "-q", "--filter", "reference=o16n-service") for e in remote}
    victim = max(remote, key=lambda e: placed.get(e, 0))
    say(f"consume: pool of {args.pool} placed {placed}; cutting {victim} after {args.cut_after} s")
    events: list[tuple[float, str]] = []
    failures: list[dict[str, Any]] = []
    lock = threading.Lock()
    path = f"/api/{iris.SERVICE}/V1.0"
    body = json.dumps(iris.INPUT).encode()
    start = time.monotonic()
    end = start + args.consume_seconds

    def client() -> None:
        api = Api(c.api.url, c.api.token, timeout=60)
        try:
            while time.monotonic() < end:
                status: int | None
                sent = time.monotonic()
                try:
                    status, raw = api.send("POST", path, body)
                except BenchError as exc:
                    status, raw = None, str(exc).encode()
                kind = outcome(status, raw)
                with lock:
                    events.append((time.monotonic(), kind))
                    if kind != "ok" and len(failures) < 20:  # what they said, and when
                        failures.append(
                            {
                                "kind": kind,
                                "sent_s": sent - start,
                                "answer": raw[:300].decode(errors="replace"),
                            }
                        )
                if kind == "connection":
                    time.sleep(0.05)
        finally:
            api.close()

    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, start + args.cut_after - time.monotonic()))
    with cut_link(c.node(victim)) as cut:
        for thread in threads:
            thread.join()
        pool_after = iris.pool(c.api, "V1.0")
        placed_after = c.serving()
    kinds = tally(kind for _, kind in events)
    successes = [t for t, kind in events if kind == "ok"]
    last = max((t for t, _ in events), default=end)
    after_cut = [t for t in successes if t >= cut]
    figures = {
        "publish_first_consume_s": published["first_consume_s"],
        "pool": args.pool,
        "placed": placed,
        "cut": victim,
        "requests": len(events),
        "by_kind": kinds,
        "success_ratio": kinds.get("ok", 0) / len(events) if events else 0.0,
        "longest_gap_s": longest_gap(successes, start, max(last, end)),
        "first_success_after_cut_s": (after_cut[0] - cut) if after_cut else None,
        "pool_after": pool_after,
        "placed_at_end_of_load": placed_after,
        "service_images_before_cut": images,
        "cut_s": cut - start,
        "failures": failures,
    }
    c.wait_up()
    c.api.ok("DELETE", f"/services/{iris.SERVICE}/V1.0")
    c.api.call("DELETE", f"/snapshots/{snapshot}")
    c.only(*c.entries)
    return figures


#: image_moves' publishes: (version, snapshot made on "a" or "b", changed or not), all
#: consumed with only node B taking containers; the last is the baseline (nothing to move)
MOVES = [
    ("changed-from-a", "a", True),
    ("changed-from-a-v2", "a", True),  # the same snapshot again, another version
    ("pristine-from-a", "a", False),
    ("changed-on-b", "b", True),
]


def image_moves(c: Cluster, args: argparse.Namespace) -> dict[str, Any]:
    """Snapshots made on node A (a file written; pristine) published and first consumed
    with only node B taking containers, beside one made on B itself; bytes and seconds
    moved, from the controller's log."""
    where = {"a": c.entries[1], "b": c.entries[2]}
    snapshots: dict[tuple[str, bool], str] = {}
    for made_on, changed in sorted({(m, ch) for _, m, ch in MOVES}):
        c.only(where[made_on])
        session = c.api.session()
        c.api.execute(session, WRITE if changed else "1+1")
        name = f"nodes {'changed' if changed else 'pristine'} on {made_on}"
        answer = c.api.ok("POST", f"/sessions/{session}/snapshot", {"name": name})
        snapshots[made_on, changed] = str(answer["snapshotId"])
        c.api.ok("DELETE", f"/sessions/{session}")
    c.only(where["b"])
    figures: dict[str, Any] = {"a": where["a"], "b": where["b"]}
    for version, made_on, changed in MOVES:
        offset = c.server.log.stat().st_size
        copied = c.describe()[where["b"]].get("bytesCopied", 0)
        took = publish_and_consume(c, snapshots[made_on, changed], version, changed)
        time.sleep(0.5)  # the log's buffer (flushed every 0.2 s)
        figures[version] = {
            "first_consume_s": took,
            "moves": moved_lines(c.server.log, offset),
            "admin_bytes_copied": c.describe()[where["b"]].get("bytesCopied", 0) - copied,
        }
        say(f"image moves: {version}: first consume {took:.2f} s, {figures[version]['moves']}")
        c.api.ok("DELETE", f"/services/Moved/{version}")
    for snapshot in snapshots.values():
        c.api.call("DELETE", f"/snapshots/{snapshot}")
    c.only(*c.entries)
    return figures


WRITE = "open('/var/tmp/made-on', 'w').write('A')"


def publish_and_consume(c: Cluster, snapshot: str, version: str, changed: bool) -> float:
    """Seconds from publishing ``Moved/<version>`` to its first right answer."""
    output = "made = open('/var/tmp/made-on').read()" if changed else "made = 'pristine'"
    body = {
        "code": output,
        "outputParameterDefinitions": [{"name": "made", "type": "character"}],
        "runtimeType": "Python",
        "snapshotId": snapshot,
    }
    want = "A" if changed else "pristine"
    started = time.perf_counter()
    c.api.ok("POST", f"/services/Moved/{version}", body)
    while True:
        status, answer = c.api.call("POST", f"/api/Moved/{version}", {})
        if status != 503:
            break
        c.server.check_alive()
        if time.perf_counter() - started > 300:
            raise BenchError(f"Moved/{version} still answers 503 after 300 s")
    took = time.perf_counter() - started
    if status != 200 or (answer.get("outputParameters") or {}).get("made") != want:
        raise BenchError(f"first consume of Moved/{version}: HTTP {status}: {str(answer)[:400]}")
    return took


@contextmanager
def cut_link(node: engines.Node) -> Iterator[float]:
    """The node's link down for the ``with`` block (its start time), up again after it,
    whatever happened."""
    node.cut_link()
    try:
        yield time.monotonic()
    finally:
        node.restore_link()


# --- the run ------------------------------------------------------------------------------


def access(tmp: Path) -> Path:
    """The controller's client key (``O16N_SSH_KEY``), which every node is started to take."""
    folder = tmp / "ssh"
    folder.mkdir(mode=0o700)
    return engines.make_key(folder / "id_ed25519", "o16n bench")


PHASES: list[tuple[str, Callable[..., dict[str, Any]], bool]] = [  # name, phase, takes idle
    ("placement", placement, True),
    ("round_trip", round_trip, False),
    ("warm_create", warm_create, True),
    ("node_loss", node_loss, True),
    ("consume_cut", consume_cut, False),
    ("image_moves", image_moves, False),
]


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    image = args.image or runtime_tag(args.tree)
    figures: dict[str, Any] = {"machine_at_start": machine_load(LABEL), "image": image}
    for name in engines.sweep_stale(say):
        say(f"swept {name}, left by a run that died")
    started = time.monotonic()
    key = access(tmp)
    with engines.running_nodes(2, say, client_key=key) as nodes:
        figures["nodes_start_s"] = time.monotonic() - started
        figures["image_load_s"] = engines.load_image(nodes, image)
        say(f"runtime image loaded into the nodes in {figures['image_load_s']:.0f} s")
        known = engines.write_known_hosts(nodes, tmp / "ssh" / "known_hosts")
        env = {
            "O16N_COMPUTE_NODES": " ".join(node.ssh_entry for node in nodes),
            "O16N_SSH_KEY": str(key),
            "O16N_SSH_KNOWN_HOSTS": str(known),
            "O16N_NODE_DIR": str(tmp / "n"),
            "O16N_SESSIONS_PER_USER": "1000",
            "O16N_CONTAINER_READ_ONLY": "false",  # the changed snapshot writes /var/tmp
            "O16N_LOG_LEVEL": "INFO",  # the image moves' lines
            "O16N_LOG_FORMAT": "json",
        }
        if args.probe_seconds is not None:
            env["O16N_NODE_PROBE_SECONDS"] = str(args.probe_seconds)
        password = "bench-" + secrets.token_urlsafe(18)
        server = start_o16n(
            tmp, password, image, instance=INSTANCE, tree=args.tree, env=env, detach=True
        )
        try:
            server.wait_ready(120)
            cluster = Cluster(Api(server.url).login(password), server, nodes)
            cluster.wait_up()
            idle = cluster.wait_stable()
            figures["idle_containers"] = idle
            say(f"nodes up, warm pools full: {idle}")
            figures["load_by_phase"] = {}
            for name, phase, takes_idle in PHASES:
                if args.only and name not in args.only:
                    continue
                began = time.monotonic()
                try:
                    cluster.wait_up()
                    cluster.only(*cluster.entries)
                    settled = cluster.wait_stable()  # every pool full again
                    if settled != idle:
                        say(f"{name}: the nodes hold {settled}, not {idle} as at the start")
                    figures["load_by_phase"][name] = os.getloadavg()[0]
                    result = phase(cluster, args, idle) if takes_idle else phase(cluster, args)
                except BenchError as exc:  # the next phases still run: a partial report
                    say(f"{name} failed: {exc}")
                    result = {"error": str(exc)}
                    cluster.wait_up()
                    cluster.only(*cluster.entries)
                result["phase_s"] = time.monotonic() - began
                figures[name] = result
            server.check_alive()
            figures["machine_at_end"] = machine_load(LABEL)
        finally:
            server.stop()
            keep_log(server.log)
    return figures


def keep_log(log: Path) -> None:
    """The server's log next to the results (the scratch directory goes): the moves' and
    the lost node's lines, to read against the figures."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    kept = RESULTS_DIR / f"nodes-{stamp}-server.log"
    shutil.copyfile(log, kept)
    say(f"the server's log: {kept}")


def summarise(figures: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"nodes: 2 started in {figures['nodes_start_s']:.0f} s, runtime image loaded in "
        f"{figures['image_load_s']:.0f} s; idle containers (the warm pools): "
        f"{figures['idle_containers']}"
    ]
    ratios: dict[str, float] = {}
    absolute: dict[str, float] = {}

    def failed(name: str) -> bool:
        if name not in figures:
            return True
        if "error" in figures[name]:
            lines.append(f"{name}: FAILED: {figures[name]['error'][:300]}")
            return True
        return False

    if not failed("placement"):
        p = figures["placement"]
        lines.append(
            f"placement: {p['sessions']} sessions over 3 nodes: "
            + ", ".join(f"{e} {n}" for e, n in p["per_node"].items())
            + f" (created in {p['create_all_s']:.1f} s)"
        )
    if not failed("round_trip"):
        r = figures["round_trip"]
        loc, rem = r["local"], r["remote"]
        lines.append(
            f"{f'execute 1+1 at c=1, {args.rounds} interleaved rounds':46}"
            f"{'local':>10}{'remote':>10}{'ratio':>8}"
        )
        for label, key in (("p50 (ms)", "p50_ms"), ("p90 (ms)", "p90_ms"), ("requests/s", "rps")):
            ratio = rem[key] / loc[key]
            ratios[f"round_trip_{key}_remote_vs_local"] = ratio
            lines.append(f"  {label:44}{loc[key]:10.2f}{rem[key]:10.2f}{ratio:8.2f}")
        absolute["execute_remote_p50_ms"] = rem["p50_ms"]
    if not failed("warm_create"):
        w = figures["warm_create"]
        loc, rem = w["local"], w["remote"]
        lines.append(
            f"{f'POST /sessions from a full warm pool, n={args.n}':46}"
            f"{'local':>10}{'remote':>10}{'ratio':>8}"
        )
        for label, key in (("p50 (ms)", "p50_ms"), ("p90 (ms)", "p90_ms")):
            ratio = rem[key] / loc[key]
            ratios[f"warm_create_{key}_remote_vs_local"] = ratio
            lines.append(f"  {label:44}{loc[key]:10.1f}{rem[key]:10.1f}{ratio:8.2f}")
        absolute["warm_create_remote_p50_ms"] = rem["p50_ms"]
    if not failed("node_loss"):
        n = figures["node_loss"]
        cut = n["cut_to_410_s"]
        spread_text = (
            f"min {cut['min']:.1f} / median {cut['median']:.1f} / max {cut['max']:.1f} s"
            if cut
            else "never"
        )
        lines.append(
            f"node loss: link cut -> 410, {n['answered_410']}/{n['sessions']} sessions: "
            f"{spread_text}; node 'lost' {_opt(n['cut_to_lost_state_s'])}"
        )
        lines.append(
            f"  link restored after {n['link_down_s']:.1f} s -> node up "
            f"{_opt(n['restore_to_up_s'])}, "
            f"old containers gone {_opt(n['restore_to_old_containers_gone_s'])}; old sessions "
            f"then answer {n['after_restore_execute_status']}"
        )
        if cut:
            absolute["cut_to_410_median_s"] = cut["median"]
    if not failed("consume_cut"):
        k = figures["consume_cut"]
        lines.append(
            f"consume, {args.clients} clients for {args.consume_seconds:.0f} s, pool "
            f"{k['pool']} placed {k['placed']}, {k['cut']} cut at {args.cut_after:.0f} s:"
        )
        lines.append(
            f"  pool at the end of the load (cut node restored after it): "
            f"{k['placed_at_end_of_load']}"
        )
        lines.append(
            f"  success ratio {k['success_ratio']:.4f} of {k['requests']} requests; by kind "
            f"{k['by_kind']}; longest gap without a success {k['longest_gap_s']:.2f} s; first "
            f"success after the cut {_opt(k['first_success_after_cut_s'])}"
        )
        absolute["consume_success_ratio"] = k["success_ratio"]
        absolute["consume_longest_gap_s"] = k["longest_gap_s"]
    if not failed("image_moves"):
        m = figures["image_moves"]
        lines.append(
            f"publish -> first consume with only B taking containers (A {m['a']}, B {m['b']}):"
        )
        for version, _, _ in MOVES:
            v = m[version]
            moved = sum(int(x["bytes"] or 0) for x in v["moves"])
            seconds = sum(float(x["seconds"] or 0) for x in v["moves"])
            lines.append(
                f"  {version:16} first consume {v['first_consume_s']:6.2f} s; "
                f"{len(v['moves'])} move(s), {moved / 1e3:.1f} kB in {seconds:.2f} s "
                f"(/admin/nodes: {v.get('admin_bytes_copied', 0) / 1e3:.1f} kB)"
            )
    lines.append(
        "load average at each phase's start: "
        + ", ".join(f"{k} {v:.1f}" for k, v in figures.get("load_by_phase", {}).items())
    )
    if "machine_at_end" in figures:
        lines.append(machine_line(figures["machine_at_start"], figures["machine_at_end"]))
    figures["ratios"], figures["absolute"] = ratios, absolute
    return "\n".join(lines)


def _opt(seconds: float | None) -> str:
    return "never" if seconds is None else f"after {seconds:.1f} s"


def unavailable() -> str | None:
    """Why nodes cannot start here, or None."""
    if os.geteuid() != 0:
        return "compute nodes need root (network namespaces, veth pairs, their own dockerd)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not Path(engines.SSHD).exists():
        missing.append(engines.SSHD)
    if missing:
        return f"compute nodes need {', '.join(missing)} (`make nodes` installs them)"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=30, help="placement: sessions (30)")
    parser.add_argument("--requests", type=int, default=300, help="round trip: per round (300)")
    parser.add_argument("--rounds", type=int, default=4, help="round trip: rounds (4)")
    parser.add_argument("--n", type=int, default=8, help="warm create: samples of each (8)")
    parser.add_argument("--settle", type=float, default=1.0, help="s a pool's container runs")
    parser.add_argument("--lost-sessions", type=int, default=4, help="node loss: sessions (4)")
    parser.add_argument("--loss-timeout", type=float, default=90.0, help="node loss: give up")
    parser.add_argument("--pool", type=int, default=4, help="consume: the pool's size (4)")
    parser.add_argument("--clients", type=int, default=4, help="consume: clients (4)")
    parser.add_argument("--consume-seconds", type=float, default=20.0, help="consume: load (20)")
    parser.add_argument("--cut-after", type=float, default=5.0, help="consume: cut at (5)")
    parser.add_argument("--probe-seconds", type=float, help="O16N_NODE_PROBE_SECONDS (default)")
    parser.add_argument(
        "--only",
        type=lambda s: s.split(","),
        help="comma-separated phases: " + ",".join(p[0] for p in PHASES),
    )
    common_options(parser)
    args = parser.parse_args(argv)
    counts = (args.sessions, args.requests, args.rounds, args.n, args.lost_sessions, args.pool)
    if min(*counts, args.clients) < 1:
        parser.error("counts (--sessions, --requests, ..., --clients) must be at least 1")
    if not 0 < args.cut_after < args.consume_seconds:
        parser.error("--cut-after must fall within --consume-seconds")
    if unknown := set(args.only or ()) - {p[0] for p in PHASES}:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    if reason := unavailable():
        print(f"bench.nodes: {reason}", file=sys.stderr)
        return 2
    return run_bench("nodes", args, run, summarise, labels=[LABEL], tools=TOOLS, images=True)


if __name__ == "__main__":
    raise SystemExit(main())
