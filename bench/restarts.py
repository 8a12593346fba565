"""Benchmark: restarts after SIGKILL — how long until ready, and what is left behind.

1. Restart to ready: the server holds ``--sessions`` idle sessions and is killed with
   SIGKILL; a new one starts on the same data directory. Figures: seconds from its start
   until it answers HTTP (start-up includes adopting every session) and until every
   session is listed and the last one executes code.
2. Leftovers: ``--kills`` times, while worker threads create sessions, execute, take
   snapshots, publish services from them, consume and delete, the server is killed with
   SIGKILL at a random moment and started again. After the last start the server is
   stopped cleanly and what nothing refers to is counted against its database: files
   under ``snapshots/`` and ``services/`` no row names (``.tmp`` included), socket
   directories of no live session, containers of the instance that are not a live
   session's, images labelled with the instance (or named like its images) no row names,
   and rows whose image or file is missing. Target: all 0.

Every server runs with instance ``o16n-bench-restarts``; its containers and images are
removed at the end, even on failure.

    .venv/bin/python -m bench.restarts [--sessions 200] [--kills 20] [--workers 3]

Writes bench/results/restarts-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench._bench import run_bench
from bench._client import Api
from bench._docker import docker_ids
from bench._server import HOST, BenchError, Server, common_options, free_port, start_o16n

INSTANCE = "o16n-bench-restarts"
LABEL = f"o16n.instance={INSTANCE}"
PASSWORD = "bench-restarts-password"


class Controller:
    """The server on one port and data directory (``tmp/data``), restarted at will."""

    def __init__(self, tmp: Path, args: argparse.Namespace) -> None:
        self.tmp, self.args, self.data = tmp, args, tmp / "data"
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.server: Server | None = None

    def start(self) -> float:
        """Start it; seconds until it answers HTTP."""
        started = time.monotonic()
        env = {
            "O16N_SESSIONS_PER_USER": str(self.args.sessions + 50),
            "O16N_WARM_POOL_SIZE": "2",
            "O16N_SERVICE_WARM_POOL_SIZE": "1",
            "O16N_SERVICE_PRELOAD": "dill",
        }
        args = self.args
        self.server = start_o16n(
            self.tmp,
            PASSWORD,
            args.image,
            instance=INSTANCE,
            tree=args.tree,
            name="data",
            env=env,
            port=self.port,
        )
        self.server.wait_ready(timeout=300)
        return time.monotonic() - started

    def kill(self) -> None:
        assert self.server is not None
        self.server.process.send_signal(signal.SIGKILL)
        self.server.process.wait()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


def call(url: str, method: str, path: str, token: str, body: Any = None) -> Any:
    """One API call on a connection of its own (the workers are threads)."""
    api = Api(url, token)
    try:
        return api.ok(method, path, body)
    finally:
        api.close()


# --- 1. restart to ready ------------------------------------------------------------------


def restart_to_ready(ctl: Controller, sessions: int) -> dict[str, Any]:
    ctl.start()
    token = login_retry(ctl)
    ids: list[str] = []
    with ThreadPoolExecutor(4) as pool:
        for reply in pool.map(
            lambda _: call(ctl.url, "POST", "/sessions", token, {"runtimeType": "Python"}),
            range(sessions),
        ):
            ids.append(reply["sessionId"])
            if len(ids) % 25 == 0:
                print(f"  {len(ids)}/{sessions} sessions", file=sys.stderr, flush=True)
    ctl.kill()
    started = time.monotonic()
    http = ctl.start()
    token = login_retry(ctl)
    listed = {s["id"] for s in call(ctl.url, "GET", "/sessions", token)}
    result = call(ctl.url, "POST", f"/sessions/{ids[-1]}/execute", token, {"code": "1 + 1"})
    ready = time.monotonic() - started
    if not set(ids) <= listed or not result["success"]:
        raise BenchError(f"after the restart {len(set(ids) - listed)} sessions were lost")
    for session_id in ids:  # the leftovers phase starts without them
        call(ctl.url, "DELETE", f"/sessions/{session_id}", token)
    return {"sessions": sessions, "answers_http_s": http, "ready_s": ready}


def login_retry(ctl: Controller) -> str:
    deadline = time.monotonic() + 60
    while True:
        try:
            return Api(ctl.url).login(PASSWORD).token or ""
        except BenchError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# --- 2. kills under load ------------------------------------------------------------------


class Load:
    """Worker threads running a workflow over and over; failures (the server being killed
    under them) are counted, not fatal."""

    def __init__(self, ctl: Controller, workers: int) -> None:
        self.ctl = ctl
        self.workers = workers
        self.stopping = threading.Event()
        self.token = ""
        self.done = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(workers)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join()

    def _run(self, worker: int) -> None:
        n = 0
        while not self.stopping.is_set():
            n += 1
            try:
                self._workflow(f"w{worker}n{n}")
                with self._lock:
                    self.done += 1
            except (BenchError, OSError, KeyError, TypeError):
                with self._lock:
                    self.errors += 1
                time.sleep(1.0)  # the server is being restarted, most likely

    def _workflow(self, tag: str) -> None:
        url, token = self.ctl.url, self.token
        session = call(url, "POST", "/sessions", token, {"runtimeType": "Python"})["sessionId"]
        code = "k = 41\nopen('blob.bin', 'wb').write(bytes(2_000_000))\nimport os"
        call(url, "POST", f"/sessions/{session}/execute", token, {"code": code})
        snapshot = call(url, "POST", f"/sessions/{session}/snapshot", token, {})["snapshotId"]
        call(url, "DELETE", f"/sessions/{session}", token)
        definitions = {
            "inputParameterDefinitions": [{"name": "x", "type": "integer"}],
            "outputParameterDefinitions": [{"name": "y", "type": "integer"}],
        }
        body = {"code": "y = k + x", "snapshotId": snapshot, "runtimeType": "Python"}
        call(url, "POST", f"/services/S{tag}/1", token, {**body, **definitions})
        call(url, "POST", f"/api/S{tag}/1", token, {"x": 1})
        call(url, "DELETE", f"/snapshots/{snapshot}", token)
        if random.random() < 0.7:  # keep some, so that restarts have services to load
            call(url, "DELETE", f"/services/S{tag}/1", token)


def kills_under_load(ctl: Controller, kills: int, workers: int) -> dict[str, Any]:
    load = Load(ctl, workers)
    ctl.start()
    load.token = login_retry(ctl)
    load.start()
    restarts: list[float] = []
    try:
        for i in range(kills):
            time.sleep(random.uniform(2.0, 6.0))
            ctl.kill()
            restarts.append(ctl.start())
            load.token = login_retry(ctl)
            print(f"  kill {i + 1}/{kills}: back in {restarts[-1]:.1f} s", file=sys.stderr)
    finally:
        load.stop()
    time.sleep(3)  # the last start's sweeps
    ctl.stop()
    return {
        "kills": kills,
        "workflows_done": load.done,
        "workflow_errors": load.errors,
        "restart_s_max": max(restarts),
        "restart_s_mean": sum(restarts) / len(restarts),
        "leftovers": leftovers(ctl.data),
    }


def leftovers(data: Path) -> dict[str, Any]:
    """What nothing refers to, counted against the stopped server's database."""
    db = sqlite3.connect(f"file:{data / 'o16n.sqlite3'}?mode=ro", uri=True)
    try:
        alive = {k for (k,) in db.execute("SELECT container_key FROM sessions WHERE state='alive'")}
        rows = list(db.execute("SELECT image, archive FROM snapshots")) + list(
            db.execute("SELECT image, archive FROM services")
        )
    finally:
        db.close()
    images = {image for image, _ in rows}
    archives = {archive for _, archive in rows if archive}
    files = [
        f"{folder}/{p.name}"
        for folder in ("snapshots", "services")
        if (data / folder).is_dir()
        for p in (data / folder).iterdir()
        if f"{folder}/{p.name}" not in archives
    ]
    sockets = [p.name for p in (data / "sockets").iterdir() if p.name not in alive]
    containers = [
        line.split()
        for line in subprocess.run(
            [
                "docker",
                "ps",
                "-a",
                "--filter",
                f"label={LABEL}",
                "--format",
                '{{.ID}} {{.Label "o16n.key"}} {{.State}}',
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    ]
    stray = [c for c in containers if len(c) < 3 or c[1] not in alive or c[2] != "running"]
    tags = set()
    for repository in ("o16n-snapshot", "o16n-service"):
        listed = subprocess.run(
            ["docker", "images", repository, "--format", "{{.Repository}}:{{.Tag}}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        tags |= {t for t in listed if t.split(":", 1)[1].startswith(INSTANCE + "-")}
    labelled = {
        t
        for image in docker_ids("images", "-q", "--filter", f"label={LABEL}")
        for t in json.loads(
            subprocess.run(
                ["docker", "image", "inspect", "--format", "{{json .RepoTags}}", image],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            or "[]"
        )
        or []
    }
    stray_images = sorted((tags | labelled) - images)
    missing = sorted(images - tags - labelled)
    lost_files = sorted(a for a in archives if not (data / a).exists())
    return {
        "files": len(files),
        "socket_dirs": len(sockets),
        "containers": len(stray),
        "images": len(stray_images),
        "rows_missing_image": len(missing),
        "rows_missing_file": len(lost_files),
        "detail": {
            "files": files[:20],
            "socket_dirs": sockets[:20],
            "containers": stray[:20],
            "images": stray_images[:20],
            "rows_missing_image": missing[:20],
            "rows_missing_file": lost_files[:20],
        },
        "kept": {"sessions": len(alive), "snapshots_and_services": len(rows)},
    }


# --- report -------------------------------------------------------------------------------


def report(figures: dict[str, Any], args: argparse.Namespace) -> str:
    ready, kills = figures["restart_to_ready"], figures["kills_under_load"]
    left = kills["leftovers"]
    return "\n".join(
        [
            f"restart after SIGKILL with {ready['sessions']} sessions held: answers HTTP in "
            f"{ready['answers_http_s']:.2f} s, every session listed and executing in "
            f"{ready['ready_s']:.2f} s",
            f"{kills['kills']} SIGKILL restarts under load ({kills['workflows_done']} workflows "
            f"done, {kills['workflow_errors']} cut by kills; restart mean "
            f"{kills['restart_s_mean']:.2f} s, max {kills['restart_s_max']:.2f} s)",
            "left behind: "
            + ", ".join(f"{k} {v}" for k, v in left.items() if isinstance(v, int))
            + " (target: all 0)",
        ]
    )


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    ctl = Controller(tmp, args)
    try:
        figures = {"restart_to_ready": restart_to_ready(ctl, args.sessions)}
        ctl.stop()
        figures["kills_under_load"] = kills_under_load(ctl, args.kills, args.workers)
        return figures
    finally:
        ctl.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=200, help="sessions held (default 200)")
    parser.add_argument("--kills", type=int, default=20, help="SIGKILL restarts (default 20)")
    parser.add_argument("--workers", type=int, default=3, help="load threads (default 3)")
    common_options(parser)
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.kills < 1 or args.workers < 1:
        parser.error("--sessions, --kills and --workers must be at least 1")
    return run_bench("restarts", args, run, report, labels=[LABEL], images=True)


if __name__ == "__main__":
    raise SystemExit(main())
