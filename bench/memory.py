"""The controller's memory under large transfers and a hostile agent (issue 8, "bound to show").

Starts ``python -m controller serve`` (fresh data dir under /tmp, instance
``o16n-bench-memory``, each session's ``/work`` tmpfs and file-size limit raised to hold the
file) and, through the HTTP API only:

1. creates ``--n`` sessions, each of which writes a file of ``--size`` bytes (a random 1 MiB
   block, each MiB stamped with its index) and reports its SHA-256, plus one attacker session;
2. measures the controller's idle RSS (``VmRSS`` of /proc/<pid>/status), resets its peak
   (``VmHWM``, via /proc/<pid>/clear_refs) and starts sampling ``VmRSS`` every 20 ms;
3. at once: every session downloads its file (``GET /sessions/{id}/files/{name}``, SHA-256
   computed as it arrives) and the attacker session's code writes a reply frame announcing
   an unsolicited blob of ``--blob`` bytes to its own agent's socket (the agent runs in the
   same process as user code, so the code finds the socket among its descriptors), then
   keeps writing zeros until the controller hangs up;
4. checks every checksum, that the attacker's session is reported ended (410, with the
   reason) and the controller still serves, and reports peak RSS (the larger of the
   sampled maximum and ``VmHWM``) above the idle baseline, against the target of 128 MiB;
5. then, measured the same way, the other large transfers one after another, each checked
   end to end (``--transfer-size`` bytes): a multipart upload, a workspace object set and
   got, a snapshot taken, loaded into a session and started from, and its zip downloaded.

    .venv/bin/python -m bench.memory [--n 10] [--size 1GiB] [--blob 2GiB]
                                     [--transfer-size 256MiB] [--image TAG]

Writes bench/results/memory-<timestamp>.json. The sessions hold n x size bytes in tmpfs
(memory): choose --n and --size for the machine (the defaults need about 11 GiB free).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ByteSize, TypeAdapter

from bench._bench import run_bench
from bench._client import Api
from bench._server import (
    BenchError,
    common_options,
    start_o16n,
)

INSTANCE = "o16n-bench-memory"
LABELS = (f"o16n.instance={INSTANCE}",)
MIB = 1024 * 1024
TARGET_MIB = 128
FILE_NAME = "big.bin"
PIECE = 1 << 20

#: Writes ``size`` bytes to FILE_NAME: one random MiB, each MiB stamped with its index
#: (so a piece out of place changes the checksum); ``digest`` is the file's SHA-256.
WRITE_CODE = """
import hashlib as _h, os as _os
_block = _os.urandom(1 << 20)
_sha = _h.sha256()
with open({name!r}, "wb") as _f:
    _left, _i = {size}, 0
    while _left:
        _piece = (_i.to_bytes(8, "big") + _block[8:])[:_left]
        _f.write(_piece)
        _sha.update(_piece)
        _left -= len(_piece)
        _i += 1
digest = _sha.hexdigest()
del _block, _piece
"""

#: Starts a thread that, after ``delay`` seconds, writes to the agent's own socket a reply
#: frame announcing a blob of ``blob`` bytes that no request asked for, then zeros until
#: the controller hangs up. User code shares the agent's process, so the socket is one of
#: its descriptors.
ATTACK_CODE = """
import json as _json, os as _os, struct as _struct, threading as _threading, time as _time

def _is_socket(fd):
    try:
        return _os.readlink(f"/proc/self/fd/{{fd}}").startswith("socket:")
    except OSError:  # the descriptor listdir itself used
        return False

def _attack(delay, blob):
    _time.sleep(delay)
    fds = [int(fd) for fd in _os.listdir("/proc/self/fd") if _is_socket(fd)]
    head = _json.dumps({{"id": 999999, "ok": True, "blob": blob}}).encode()
    frame = _struct.pack(">I", len(head)) + head + _struct.pack(">I", blob)
    zeros = bytes(1 << 20)
    for fd in fds:
        try:
            _os.write(fd, frame)
            sent = 0
            while sent < blob:
                sent += _os.write(fd, zeros[: blob - sent])
        except OSError:
            pass

_threading.Thread(target=_attack, args=({delay}, {blob}), daemon=True).start()
"""


@dataclass
class Rss:
    """The controller's resident memory, from /proc/<pid>/status, sampled in a thread."""

    pid: int
    samples: list[int] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def read(self, key: str = "VmRSS") -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise BenchError(f"no {key} for process {self.pid}")

    def reset_peak(self) -> bool:
        """Reset VmHWM to the current RSS (Linux 4.0+); False where not allowed."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    @contextlib.contextmanager
    def sampling(self, every: float = 0.02) -> Iterator[None]:
        def sample() -> None:
            while not self.stopping.wait(every):
                self.samples.append(self.read())

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self.stopping.set()
            thread.join()

    def peak(self, reset: bool) -> int:
        return max([*self.samples, self.read("VmHWM") if reset else 0])


def download(api: Api, path: str) -> tuple[str, int, float]:
    """SHA-256, size and seconds of one download on a connection of its own, hashed as it
    arrives."""
    started, sha, size = time.perf_counter(), hashlib.sha256(), 0
    own = api.clone()
    try:
        for chunk in own.stream(path, PIECE):
            sha.update(chunk)
            size += len(chunk)
    finally:
        own.close()
    return sha.hexdigest(), size, time.perf_counter() - started


def prepare(api: Api, n: int, size: int) -> tuple[list[str], list[str], str]:
    """``n`` sessions holding a file of ``size`` bytes each (and its digest), plus one more."""
    sessions = [api.session({}) for _ in range(n)]
    code = WRITE_CODE.format(name=FILE_NAME, size=size)

    def write(session: str) -> str:
        own = api.clone()
        try:
            return str(own.execute(session, code, ["digest"])["values"]["digest"])
        finally:
            own.close()

    with ThreadPoolExecutor(4) as pool:  # a few at a time: each is a core's worth of work
        digests = list(pool.map(write, sessions))
    return sessions, digests, api.session({})


def downloads_under_attack(
    api: Api, pid: int, n: int, size: int, blob: int, delay: float = 1.0
) -> dict[str, Any]:
    """The scenario against a running server (``pid`` is its process): figures in bytes."""
    rss = Rss(pid)
    started_rss = rss.read()
    sessions, digests, attacker = prepare(api, n, size)
    time.sleep(1.0)
    idle = rss.read()
    peak_reset = rss.reset_peak()
    with rss.sampling():
        api.execute(attacker, ATTACK_CODE.format(delay=delay, blob=blob))
        started = time.perf_counter()
        with ThreadPoolExecutor(n) as pool:
            paths = [f"/sessions/{s}/files/{FILE_NAME}" for s in sessions]
            results = list(pool.map(lambda path: download(api, path), paths))
        elapsed = time.perf_counter() - started
        time.sleep(max(0.0, delay + 1.0 - elapsed))  # the attack has happened
        attacker_status, attacker_reply = api.send("GET", f"/sessions/{attacker}/files")
        api.ok("GET", "/sessions")  # still serving
    peak = rss.peak(peak_reset)
    for session in sessions:
        api.call("DELETE", f"/sessions/{session}")
    intact = [
        got == want and got_size == size
        for (got, got_size, _), want in zip(results, digests, strict=True)
    ]
    return {
        "n": n,
        "size_bytes": size,
        "blob_bytes": blob,
        "rss_at_start_bytes": started_rss,
        "idle_baseline_bytes": idle,
        "peak_bytes": peak,
        "peak_above_baseline_bytes": peak - idle,
        "peak_from": "VmHWM and samples" if peak_reset else "samples only",
        "samples": len(rss.samples),
        "downloads_intact": sum(intact),
        "download_seconds": [round(seconds, 2) for _, _, seconds in results],
        "wall_seconds": round(elapsed, 2),
        "aggregate_mib_per_s": round(n * size / MIB / elapsed, 1),
        "attacker_status": attacker_status,
        "attacker_reply": attacker_reply[:300].decode(errors="replace"),
    }


#: In the session: the SHA-256 of ``name`` (a file) and of ``obj`` (a workspace object).
CHECK_CODE = """
import hashlib as _h
_sha = _h.sha256()
with open({name!r}, "rb") as _f:
    while _piece := _f.read(1 << 20):
        _sha.update(_piece)
file_digest = _sha.hexdigest()
object_digest = _h.sha256(globals().get("obj", b"")).hexdigest()
"""


def pattern(size: int) -> tuple[bytes, str]:
    """The bytes ``pieces`` yields for ``size`` (a seed block) and their SHA-256."""
    block = secrets.token_bytes(PIECE)
    sha = hashlib.sha256()
    for piece in pieces(block, size):
        sha.update(piece)
    return block, sha.hexdigest()


def pieces(block: bytes, size: int) -> Any:
    index = 0
    while size > 0:
        piece = (index.to_bytes(8, "big") + block[8:])[:size]
        size -= len(piece)
        index += 1
        yield piece


def _stream(parts: list[bytes], block: bytes, size: int) -> Iterator[bytes]:
    """``parts`` around the pattern of ``size`` bytes, as an upload body (never whole)."""
    yield parts[0]
    yield from pieces(block, size)
    yield from parts[1:]


def upload(api: Api, path: str, body: Iterator[bytes], content_type: str, want: int) -> None:
    """A streamed (chunked) POST, which must answer ``want``."""
    answer = api.response("POST", path, body, api.headers(content_type))
    raw = answer.read()
    if answer.status != want:
        raise BenchError(f"POST {path}: HTTP {answer.status}: {raw[:300]!r}")


def digests(api: Api, session: str) -> list[Any]:
    reply = api.execute(session, CHECK_CODE.format(name="up.bin"), ["file_digest", "object_digest"])
    return [reply["values"]["file_digest"], reply["values"]["object_digest"]]


def large_transfers(api: Api, pid: int, size: int) -> dict[str, Any]:
    """Every other large transfer, one after another, each checked end to end: an upload,
    a workspace object set and got, a snapshot taken, a session started from it, a
    snapshot loaded into a session, and the snapshot's zip downloaded. Figures in bytes."""
    rss = Rss(pid)
    block, digest = pattern(size)
    session, target = api.session({}), api.session({})
    time.sleep(1.0)
    idle = rss.read()
    peak_reset = rss.reset_peak()
    checks: dict[str, bool] = {}
    with rss.sampling():
        boundary = "o16n-bench-" + secrets.token_hex(8)
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="up.bin"'
            "\r\nContent-Type: application/octet-stream\r\n\r\n"
        ).encode()
        form = _stream([head, f"\r\n--{boundary}--\r\n".encode()], block, size)
        upload(
            api,
            f"/sessions/{session}/files",
            form,
            f"multipart/form-data; boundary={boundary}",
            201,
        )
        # a pickle of one bytes object (protocol 4, BINBYTES8), streamed
        pickled = _stream([b"\x80\x04\x8e" + size.to_bytes(8, "little"), b"."], block, size)
        upload(api, f"/sessions/{session}/workspace/obj", pickled, "application/octet-stream", 200)
        checks["upload"], checks["workspace_set"] = (d == digest for d in digests(api, session))
        checks["workspace_get"] = download(api, f"/sessions/{session}/workspace/obj")[1] > size
        snapshot = api.ok("POST", f"/sessions/{session}/snapshot", {})["snapshotId"]
        api.ok("POST", f"/sessions/{target}/loadsnapshot/{snapshot}")
        started = api.session({"snapshotId": snapshot})
        checks["loadsnapshot"] = digests(api, target) == [digest, digest]
        checks["from_snapshot"] = digests(api, started) == [digest, digest]
        checks["snapshot_zip"] = download(api, f"/snapshots/{snapshot}")[1] > 2 * size
    peak = rss.peak(peak_reset)
    return {
        "size_bytes": size,
        "idle_baseline_bytes": idle,
        "peak_bytes": peak,
        "peak_above_baseline_bytes": peak - idle,
        "checks": checks,
    }


async def measure(
    url: str, token: str, pid: int, n: int, size: int, blob: int, delay: float = 1.0
) -> dict[str, Any]:
    """``downloads_under_attack`` as a coroutine, for tests/security/test_agent_blobs.py."""
    api = Api(url, token, timeout=600)
    try:
        return await asyncio.to_thread(downloads_under_attack, api, pid, n, size, blob, delay)
    finally:
        api.close()


async def measure_transfers(url: str, token: str, pid: int, size: int) -> dict[str, Any]:
    """``large_transfers`` as a coroutine, for tests/security/test_agent_blobs.py."""
    api = Api(url, token, timeout=600)
    try:
        return await asyncio.to_thread(large_transfers, api, pid, size)
    finally:
        api.close()


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    password = "bench-" + secrets.token_urlsafe(18)
    room = max(args.size, args.transfer_size) + 64 * MIB
    # a snapshot's tarball, the object and its pickle live in the agent's memory at once
    memory = max(2048 * MIB, room + 1024 * MIB, 6 * args.transfer_size)
    env = {
        "O16N_SESSIONS_PER_USER": str(args.n + 5),
        "O16N_SERVICE_WARM_POOL_SIZE": "0",
        "O16N_WARM_POOL_SIZE": "0",
        "O16N_CONTAINER_WORK_SIZE": str(room),
        "O16N_CONTAINER_FSIZE": str(room),
        "O16N_CONTAINER_MEMORY": str(memory),
        "O16N_EXECUTE_TIMEOUT": "1200",
        "O16N_MAX_BODY_BYTES": str(max(256 * MIB, args.transfer_size + 64 * MIB)),
    }
    server = start_o16n(
        tmp, password, args.image, instance=INSTANCE, tree=args.tree, env=env, detach=True
    )
    try:
        server.wait_ready()
        api = Api(server.url, timeout=600).login(password)
        try:
            figures = downloads_under_attack(api, server.pid, args.n, args.size, args.blob)
            if args.transfer_size:
                figures["transfers"] = large_transfers(api, server.pid, args.transfer_size)
            return figures
        except BenchError:
            server.check_alive()
            raise
    finally:
        server.stop()


def summarise(figures: dict[str, Any], args: argparse.Namespace) -> str:
    """The verdict into ``figures``; the report."""
    figures["target_mib"] = TARGET_MIB
    transfers = figures.get("transfers")
    figures["target_met"] = (
        figures["peak_above_baseline_bytes"] < TARGET_MIB * MIB
        and figures["downloads_intact"] == figures["n"]
        and (
            transfers is None
            or (
                transfers["peak_above_baseline_bytes"] < TARGET_MIB * MIB
                and all(transfers["checks"].values())
            )
        )
    )
    mib = {k: v / MIB for k, v in figures.items() if k.endswith("_bytes")}
    verdict = "met" if figures["target_met"] else "MISSED"
    return "\n".join(
        [
            f"controller RSS while {figures['n']} sessions each download "
            f"{mib['size_bytes']:.0f} MiB and one announces a {mib['blob_bytes']:.0f} MiB blob",
            f"  at start {mib['rss_at_start_bytes']:.0f} MiB, idle baseline "
            f"{mib['idle_baseline_bytes']:.0f} MiB, peak {mib['peak_bytes']:.0f} MiB "
            f"({figures['peak_from']})",
            f"  peak above baseline: {mib['peak_above_baseline_bytes']:.0f} MiB "
            f"(target < {TARGET_MIB} MiB: {verdict})",
            f"  downloads intact: {figures['downloads_intact']}/{figures['n']}, "
            f"{figures['wall_seconds']} s, {figures['aggregate_mib_per_s']} MiB/s in all",
            f"  attacker's session afterwards: HTTP {figures['attacker_status']} "
            f"{figures['attacker_reply'][:160]}",
            *_transfer_lines(figures.get("transfers")),
        ]
    )


def _transfer_lines(transfers: dict[str, Any] | None) -> list[str]:
    if transfers is None:
        return []
    above = transfers["peak_above_baseline_bytes"] / MIB
    checks = ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in transfers["checks"].items())
    return [
        f"transfers of {transfers['size_bytes'] / MIB:.0f} MiB one after another: peak "
        f"{above:.0f} MiB above the idle baseline of "
        f"{transfers['idle_baseline_bytes'] / MIB:.0f} MiB",
        f"  {checks}",
    ]


def _bytes(text: str) -> int:
    return int(TypeAdapter(ByteSize).validate_python(text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10, help="sessions downloading at once (10)")
    parser.add_argument(
        "--size", type=_bytes, default=1024 * MIB, help="bytes of each file, e.g. 200MiB (1GiB)"
    )
    parser.add_argument(
        "--blob", type=_bytes, default=2048 * MIB, help="bytes the attacker announces (2GiB)"
    )
    parser.add_argument(
        "--transfer-size",
        type=_bytes,
        default=256 * MIB,
        help="bytes of the upload, workspace object and snapshot phase; 0 skips it (256MiB)",
    )
    common_options(parser)
    args = parser.parse_args(argv)
    if args.n < 1 or args.size < 1 or not 0 < args.blob < 1 << 32:
        parser.error("--n and --size must be positive, --blob between 1 byte and 4 GiB")
    return run_bench("memory", args, run, summarise, labels=LABELS)


if __name__ == "__main__":
    raise SystemExit(main())
