"""``o16n admin capacity``: ML Server's "evaluate capacity", over the consume API.

Drives ``POST /api/{name}/{version}`` with one JSON input from N concurrent workers, each
on its own keep-alive connection, for a fixed time after a warm-up that is not counted; or
steps the concurrency up until the p95 latency passes a threshold. Reports throughput,
latency percentiles, every answer by outcome, and the per-phase breakdown the server gives
in its ``Server-Timing`` header; ``--html`` writes a self-contained report with charts.

Stdlib only, like the rest of ``o16n_client``: the load comes from a small asyncio
HTTP/1.1 client (one request's bytes built once, sent again and again over the
connection), which on one core drives several thousand requests a second: more than a
consume endpoint answers, so the generator is not what is measured. It refuses any host
but a loopback one unless the operator names it (``--target-host``): this is a load tool.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import math
import random
import re
import socket
import ssl
import sys
import time
import urllib.parse
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from o16n_client.http import OK, REFUSED, USAGE, Client, CliError

#: bounds: a capacity run is a measurement, not a soak test or a flood
MAX_CONCURRENCY = 256
MAX_SECONDS = 3600.0
#: the phases the server names, in the order a request goes through them
KNOWN_PHASES = ("auth", "queue", "acquire", "restore", "exec", "encode", "total")
#: a body larger than this is not read (a consume answer is small; this is a load tool)
MAX_BODY = 64 * 1024 * 1024
#: an answer's status line and headers together (a server could send headers forever)
MAX_HEAD = 64 * 1024
#: per step, the latencies (and each phase's durations) percentiles are computed from: all
#: of them up to this many, then a uniform sample of this size; counts, means and the
#: maximum stay exact. An hour at thousands of requests a second is millions of requests.
RESERVOIR = 100_000
#: distinct error texts and phase names counted per step (a server could make each unique)
MAX_KINDS = 50


# --- Server-Timing (W3C) ----------------------------------------------------------------

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    """``text`` split on ``separator`` where it is not inside a quoted string."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def parse_server_timing(header: str) -> dict[str, float]:
    """Each metric's ``dur`` in ms, by name, from a ``Server-Timing`` value (several headers
    joined with commas). Garbage is skipped, never raised: a metric without a token name,
    or without a finite, non-negative ``dur``, is left out; of a repeated name the first
    counts (as of a repeated ``dur`` parameter)."""
    found: dict[str, float] = {}
    for entry in _split_outside_quotes(header, ","):
        params = _split_outside_quotes(entry, ";")
        name = params[0].strip()
        if not _TOKEN.fullmatch(name) or name in found:
            continue
        for param in params[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() != "dur":
                continue
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            try:
                dur = float(value)
            except ValueError:
                break
            if math.isfinite(dur) and dur >= 0:
                found[name] = dur
            break
    return found


def phase_order(names: Any) -> list[str]:
    """The known phases in the order a request meets them, then the others by name."""
    known = [n for n in KNOWN_PHASES if n in names]
    return known + sorted(n for n in names if n not in KNOWN_PHASES)


# --- options ------------------------------------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_seconds(text: str, bare: str = "s") -> float:
    """``30s``, ``500ms``, ``2m``, ``1h``; a bare number is in ``bare`` units."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*", text)
    if not match:
        raise CliError(f"not a duration: {text!r} (say 30s, 500ms, 2m)", USAGE)
    return float(match.group(1)) * _UNITS[match.group(2) or bare]


def is_loopback(host: str) -> bool:
    """A loopback address, or a ``localhost`` name every address of which is loopback: the
    resolver may well ask DNS about ``x.localhost`` (and try the search domains after it),
    and the answer may be any host."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if not (host.lower() in ("localhost", "localhost.") or host.lower().endswith(".localhost")):
        return False
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    addresses = {info[4][0] for info in found}
    return bool(addresses) and all(
        ipaddress.ip_address(str(a).partition("%")[0]).is_loopback for a in addresses
    )


def check_target(server: str, target_host: str | None) -> urllib.parse.SplitResult:
    """The server URL split, if it may be driven: a loopback host, or the one the operator
    named with ``--target-host``. Anything else is a usage error, before any request."""
    url = urllib.parse.urlsplit(server)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise CliError(f"not an http(s) server URL: {server!r}", USAGE)
    host = url.hostname
    if is_loopback(host):
        return url
    if target_host is None:
        raise CliError(
            f"refusing to load {host}: capacity runs only against a loopback server unless "
            f"you name the host explicitly (--target-host {host})",
            USAGE,
        )
    if target_host.strip("[]").lower() != host.lower():
        raise CliError(
            f"--target-host {target_host} is not the server's host {host}: not loading it",
            USAGE,
        )
    return url


def step_list(args: argparse.Namespace) -> list[int]:
    """The concurrency of each step: ``--step``, else powers of two up to
    ``--max-concurrency``, else the one ``--concurrency``."""
    if args.step:
        try:
            steps = [int(s) for s in args.step.split(",") if s.strip()]
        except ValueError:
            raise CliError(
                f"--step takes integers separated by commas: {args.step}", USAGE
            ) from None
    elif args.max_concurrency is not None:
        steps, c = [], 1
        while c < args.max_concurrency:
            steps.append(c)
            c *= 2
        steps.append(args.max_concurrency)
    else:
        steps = [args.concurrency]
    if not steps or any(not 1 <= s <= MAX_CONCURRENCY for s in steps):
        raise CliError(f"concurrency must be 1 to {MAX_CONCURRENCY}: {steps}", USAGE)
    if steps != sorted(set(steps)):
        raise CliError(f"steps must go up: {steps}", USAGE)
    return steps


def read_input(args: argparse.Namespace) -> dict[str, Any] | None:
    """The JSON object sent with every request, or ``None`` when none was given."""
    if args.input is not None and args.input_file is not None:
        raise CliError("give --input or --input-file, not both", USAGE)
    text = args.input
    if args.input_file is not None:
        try:
            text = (
                sys.stdin.read()
                if args.input_file == "-"
                else Path(args.input_file).read_text(encoding="utf-8")
            )
        except OSError as exc:
            raise CliError(f"cannot read {args.input_file}: {exc.strerror}", USAGE) from None
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise CliError(f"the input is not JSON: {exc}", USAGE) from None
    if not isinstance(value, dict):
        raise CliError("the input must be a JSON object of input parameters", USAGE)
    return value


def check_input(service: Any, given: dict[str, Any] | None) -> dict[str, Any]:
    """The body to send, checked against the service's input parameter names."""
    if isinstance(service, list):  # the API answers a one-element array (ML Server's)
        service = service[0] if service else {}
    definitions = service.get("inputParameterDefinitions") if isinstance(service, dict) else []
    names = [d.get("name") for d in definitions or [] if isinstance(d, dict)]
    body = given if given is not None else {}
    if given is None and names:
        raise CliError(f"the service takes inputs {names}: give --input or --input-file", USAGE)
    unknown = sorted(set(body) - set(names))
    missing = [n for n in names if n not in body]
    if unknown or missing:
        raise CliError(
            f"the input does not match the service's inputs {names}: "
            + "; ".join(
                part
                for part in (
                    f"unknown {unknown}" if unknown else "",
                    f"missing {missing}" if missing else "",
                )
                if part
            ),
            USAGE,
        )
    return body


# --- the load generator -------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class Connection:
    """One keep-alive HTTP/1.1 connection (asyncio streams); reopened when the server
    closes it. Just enough HTTP for an aiohttp server's answers: Content-Length, chunked,
    or up to the end of the connection."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext | None) -> None:
        self.host, self.port, self.context = host, port, context
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        writer, self.reader, self.writer = self.writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()

    async def request(self, data: bytes) -> Answer:
        """Send one request's bytes, read its answer. A connection the server closed while
        idle is reopened and the request sent once more (nothing of it was answered)."""
        reused = self.writer is not None
        try:
            return await self._exchange(data)
        except _Closed:
            await self.close()
            if not reused:
                raise ConnectionError("the server closed the connection") from None
            return await self._exchange(data)

    async def _exchange(self, data: bytes) -> Answer:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.context, limit=1 << 16
            )
        assert self.reader is not None
        try:
            self.writer.write(data)
            await self.writer.drain()
            line = await self.reader.readline()
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise _Closed from exc
        if not line:
            raise _Closed
        size = 0
        while True:  # an interim answer (1xx) is followed by the real one
            status, headers, size = await self._head(line, size)
            if not 100 <= status < 200:
                break
            line = await self.reader.readline()
        body = await self._body(status, headers)
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return Answer(status, headers, body)

    async def _head(self, line: bytes, size: int) -> tuple[int, dict[str, str], int]:
        """The status of the status ``line`` and the headers that follow it, and the bytes
        of head read so far (``size`` before), which may not pass :data:`MAX_HEAD`."""
        assert self.reader is not None
        parts = line.split(None, 2)
        if (
            len(parts) < 2
            or not parts[0].startswith(b"HTTP/1.")
            or not (len(parts[1]) == 3 and parts[1].isdigit())
        ):
            await self.close()
            raise ConnectionError(f"not an HTTP answer: {line[:80]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        raw = line
        while True:
            size += len(raw)
            if size > MAX_HEAD:
                raise ConnectionError(f"the answer's headers pass {MAX_HEAD} bytes")
            raw = await self.reader.readline()
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            key, value = name.strip().lower(), value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return status, headers, size

    async def _body(self, status: int, headers: dict[str, str]) -> bytes:
        assert self.reader is not None
        if status in (204, 304):
            return b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks: list[bytes] = []
            size = 0
            while True:
                length = int((await self.reader.readline()).split(b";")[0].strip() or b"0", 16)
                if length == 0:
                    while (await self.reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                size += length
                if size > MAX_BODY:
                    raise ConnectionError("answer too large")
                chunks.append(await self.reader.readexactly(length))
                await self.reader.readline()
        if "content-length" in headers:
            length = int(headers["content-length"])
            if length > MAX_BODY:
                raise ConnectionError("answer too large")
            return await self.reader.readexactly(length)
        body = bytearray()  # no length: the body runs to the end of the connection
        while chunk := await self.reader.read(1 << 16):
            body += chunk
            if len(body) > MAX_BODY:
                raise ConnectionError("answer too large")
        await self.close()
        return bytes(body)


class _Closed(Exception):
    """The connection ended before an answer began."""


@dataclass
class Target:
    """Where to send, and the one request every worker sends."""

    host: str
    port: int
    context: ssl.SSLContext | None
    request: bytes
    timeout: float


def make_target(
    url: urllib.parse.SplitResult,
    name: str,
    version: str,
    token: str | None,
    body: dict[str, Any],
    timeout: float,
) -> Target:
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    base = url.path.rstrip("/")
    path = f"{base}/api/{urllib.parse.quote(name, safe='')}/{urllib.parse.quote(version, safe='')}"
    payload = json.dumps(body, separators=(",", ":")).encode()
    netloc = f"[{host}]" if ":" in host else host
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {netloc}:{port}",
        "Content-Type: application/json",
        "Accept: application/json",
        f"Content-Length: {len(payload)}",
        "User-Agent: o16n-admin-capacity",
    ]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    context = ssl.create_default_context() if url.scheme == "https" else None
    return Target(host, port, context, head + payload, timeout)


class Reservoir:
    """A stream of values in bounded memory: exact count, sum and maximum, and a uniform
    random sample of at most ``size`` of them (Algorithm R) for the percentiles, which are
    exact while there were no more values than that."""

    __slots__ = ("count", "maximum", "random", "size", "total", "values")

    def __init__(self, size: int, rng: random.Random) -> None:
        self.size, self.random = size, rng
        self.count, self.total, self.maximum = 0, 0.0, -math.inf
        self.values = array("d")

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.maximum = max(self.maximum, value)
        if len(self.values) < self.size:
            self.values.append(value)
        else:
            slot = self.random.randrange(self.count)
            if slot < self.size:
                self.values[slot] = value

    def sorted(self) -> list[float]:
        return sorted(self.values)


class Tally:
    """What one step counts, as its requests end: only those that ended inside ``window``
    (the warm-up's are not), by outcome, with their latencies and Server-Timing phases in
    :class:`Reservoir` s; nothing is kept per request."""

    def __init__(self, window: tuple[float, float], size: int | None = None) -> None:
        self.window = window
        self.size = RESERVOIR if size is None else size
        self.random = random.Random(0)  # noqa: S311 (sampling, not secrets)
        self.requests = self.timed = 0
        self.outcomes: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.latency = Reservoir(self.size, self.random)  # in ms, of answered requests
        self.phases: dict[str, Reservoir] = {}

    def add(
        self,
        end: float,
        latency: float,
        outcome: str,
        answered: bool = False,
        timing: dict[str, float] | None = None,
        error: str = "",
    ) -> None:
        """Count one request that ended at ``end`` (monotonic s) after ``latency`` s;
        ``outcome``: ok, failed (success false), http <status>, timeout, error."""
        if not self.window[0] <= end <= self.window[1]:
            return
        self.requests += 1
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if error:
            key = error if error in self.errors or len(self.errors) < MAX_KINDS else "other"
            self.errors[key] = self.errors.get(key, 0) + 1
        if answered:
            self.latency.add(latency * 1000)
        if timing is not None:
            self.timed += 1
            for name, dur in timing.items():
                phase = self.phases.get(name)
                if phase is None:
                    if len(self.phases) >= MAX_KINDS:
                        continue
                    phase = self.phases[name] = Reservoir(self.size, self.random)
                phase.add(dur)


def _outcome(answer: Answer) -> tuple[str, str]:
    if answer.status != 200:
        return f"http {answer.status}", ""
    try:
        body = json.loads(answer.body)
    except ValueError:
        return "failed", "the answer is not JSON"
    if isinstance(body, dict) and body.get("success") is True:
        return "ok", ""
    message = body.get("errorMessage") if isinstance(body, dict) else None
    return "failed", str(message or "success is not true")[:200]


async def _worker(target: Target, stop: float, tally: Tally) -> None:
    connection = Connection(target.host, target.port, target.context)
    try:
        while (started := time.monotonic()) < stop:
            try:
                async with asyncio.timeout(target.timeout):
                    answer = await connection.request(target.request)
            except TimeoutError:
                await connection.close()
                end = time.monotonic()
                tally.add(end, end - started, "timeout")
                continue
            except Exception as exc:  # an answer it cannot read is counted, never raised
                await connection.close()
                end = time.monotonic()
                tally.add(end, end - started, "error", error=_error_text(exc))
                await asyncio.sleep(0.05)  # a refused connect would otherwise spin
                continue
            end = time.monotonic()
            outcome, error = _outcome(answer)
            timing = None
            if "server-timing" in answer.headers:
                timing = parse_server_timing(answer.headers["server-timing"])
            tally.add(end, end - started, outcome, True, timing, error)
    finally:
        await connection.close()


def _error_text(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:200]


async def run_step(target: Target, concurrency: int, duration: float, warmup: float) -> Step:
    """``concurrency`` workers for ``warmup + duration`` seconds; the step counts the
    requests that ended inside the measured window (after the warm-up). Requests still
    running when it closes would not count: they are cancelled then, so that a hung server
    cannot stretch a step by the request timeout."""
    begin = time.monotonic()
    window = (begin + warmup, begin + warmup + duration)
    tally = Tally(window)
    workers = [asyncio.create_task(_worker(target, window[1], tally)) for _ in range(concurrency)]
    _, running = await asyncio.wait(workers, timeout=max(window[1] - time.monotonic(), 0))
    for worker in running:
        worker.cancel()
    for outcome in await asyncio.gather(*workers, return_exceptions=True):
        if isinstance(outcome, Exception):
            raise outcome
    return Step.of(concurrency, duration, tally)


# --- figures ------------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); values sorted."""
    if not values:
        return math.nan
    rank = (len(values) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return values[low] + (values[high] - values[low]) * (rank - low)


@dataclass
class Step:
    concurrency: int
    duration: float
    requests: int
    rps: float
    ok_rps: float
    outcomes: dict[str, int]
    latency_ms: dict[str, float]
    #: per phase: count, mean, p50, p95 (ms); empty when no answer had a Server-Timing
    phases: dict[str, dict[str, float]]
    timed: int  # answers that carried a Server-Timing header
    errors: dict[str, int] = field(default_factory=dict)
    passed: bool | None = None

    @classmethod
    def of(cls, concurrency: int, duration: float, tally: Tally) -> Step:
        lat = tally.latency
        answered = lat.sorted()
        latency = {
            "mean": lat.total / lat.count if lat.count else math.nan,
            **{f"p{p}": percentile(answered, p) for p in (50, 90, 95, 99)},
            "max": lat.maximum if lat.count else math.nan,
        }
        phases = {}
        for name in phase_order(tally.phases):
            phase = tally.phases[name]
            values = phase.sorted()
            phases[name] = {
                "count": float(phase.count),
                "mean": phase.total / phase.count,
                "p50": percentile(values, 50),
                "p95": percentile(values, 95),
            }
        ok = tally.outcomes.get("ok", 0)
        return cls(
            concurrency,
            duration,
            tally.requests,
            tally.requests / duration,
            ok / duration,
            dict(sorted(tally.outcomes.items())),
            latency,
            phases,
            tally.timed,
            dict(sorted(tally.errors.items(), key=lambda kv: -kv[1])[:10]),
        )

    @property
    def error_share(self) -> float:
        return 1 - self.outcomes.get("ok", 0) / self.requests if self.requests else 1.0

    def as_json(self) -> dict[str, Any]:
        def number(v: float) -> float | None:
            return None if math.isnan(v) else round(v, 3)

        return {
            "concurrency": self.concurrency,
            "durationS": self.duration,
            "requests": self.requests,
            "requestsPerSecond": round(self.rps, 2),
            "okPerSecond": round(self.ok_rps, 2),
            "outcomes": self.outcomes,
            "errorShare": round(self.error_share, 4),
            "latencyMs": {k: number(v) for k, v in self.latency_ms.items()},
            "serverTimed": self.timed,
            "phasesMs": {
                name: {k: (int(v) if k == "count" else number(v)) for k, v in p.items()}
                for name, p in self.phases.items()
            },
            "errors": self.errors,
            "passed": self.passed,
        }


@dataclass
class Settings:
    steps: list[int]
    duration: float
    warmup: float
    p95_threshold_ms: float | None
    max_error_share: float


def judge(step: Step, settings: Settings) -> bool:
    """Whether a step is within the limits: p95 at most the threshold (when one is set)
    and no more than the allowed share of answers other than ``success: true``."""
    p95 = step.latency_ms["p95"]
    slow = settings.p95_threshold_ms is not None and (
        math.isnan(p95) or p95 > settings.p95_threshold_ms
    )
    return not slow and step.error_share <= settings.max_error_share


async def run_steps(
    target: Target, settings: Settings, progress: Callable[[Step], None] | None = None
) -> tuple[list[Step], int | None]:
    """Each step in turn, until one is out of the limits; the steps run and the capacity
    (the concurrency of the last step within them; ``None`` if the first is not)."""
    done: list[Step] = []
    capacity = None
    for concurrency in settings.steps:
        step = await run_step(target, concurrency, settings.duration, settings.warmup)
        step.passed = judge(step, settings)
        done.append(step)
        if progress is not None:
            progress(step)
        if not step.passed:
            break
        capacity = concurrency
    return done, capacity


# --- the command --------------------------------------------------------------------------


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    cmd: argparse.ArgumentParser = sub.add_parser(
        "capacity",
        help="load a published service and report its capacity (loopback or --target-host)",
        parents=[common],
        description="Drive POST /api/NAME/VERSION from concurrent keep-alive connections and "
        "report throughput, latency percentiles and the server's per-phase timings.",
    )
    cmd.add_argument("name", help="service name")
    cmd.add_argument("version", help="service version")
    cmd.add_argument("--input", help="the JSON object of input parameters sent each time")
    cmd.add_argument("--input-file", help="the same from a file (- for stdin)")
    cmd.add_argument("--concurrency", type=int, default=8, help="concurrent clients (8)")
    cmd.add_argument("--step", help="concurrency steps, e.g. 1,2,4,8,16")
    cmd.add_argument(
        "--max-concurrency", type=int, help="steps 1,2,4,… up to this (instead of --step)"
    )
    cmd.add_argument("--duration", default="10s", help="measured time per step (10s)")
    cmd.add_argument("--warmup", default="2s", help="uncounted time before each step (2s)")
    cmd.add_argument(
        "--p95-threshold", help="stop at the first step whose p95 passes this (e.g. 50ms)"
    )
    cmd.add_argument(
        "--max-errors",
        type=float,
        default=1.0,
        help="percent of answers other than success that fails a step (1)",
    )
    cmd.add_argument(
        "--request-timeout", default="30s", help="a request slower than this is a timeout"
    )
    cmd.add_argument("--target-host", help="allow this non-loopback host (the URL's own)")
    cmd.add_argument("--html", help="write a self-contained HTML report here")


def settings_of(args: argparse.Namespace) -> Settings:
    duration = parse_seconds(args.duration)
    warmup = parse_seconds(args.warmup)
    steps = step_list(args)
    if not 0.1 <= duration <= MAX_SECONDS:
        raise CliError(f"--duration must be 0.1 s to {MAX_SECONDS:.0f} s", USAGE)
    if warmup > MAX_SECONDS:
        raise CliError(f"--warmup must be at most {MAX_SECONDS:.0f} s", USAGE)
    total = len(steps) * (duration + warmup)
    if total > MAX_SECONDS:
        raise CliError(
            f"the run would take {total:.0f} s, more than {MAX_SECONDS:.0f} s: fewer steps "
            "or a shorter --duration",
            USAGE,
        )
    threshold = None
    if args.p95_threshold is not None:
        threshold = parse_seconds(args.p95_threshold, bare="ms") * 1000
    if not 0 <= args.max_errors <= 100:
        raise CliError("--max-errors is a percentage, 0 to 100", USAGE)
    return Settings(steps, duration, warmup, threshold, args.max_errors / 100)


STEP_HEAD = (
    f"{'CONC':>5} {'REQS':>7} {'REQ/S':>8} {'OK':>7} {'NOT OK':>7} "
    f"{'P50':>8} {'P90':>8} {'P95':>8} {'P99':>8} {'MAX':>8}  VERDICT"
)


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def fine_ms(value: float) -> str:
    """A phase's milliseconds: three decimals below 0.1 ms (0.004 is not 0.0), else two."""
    if math.isnan(value):
        return "-"
    return f"{value:.3f}" if value < 0.1 else f"{value:.2f}"


def step_line(step: Step) -> str:
    lat = step.latency_ms
    ok = step.outcomes.get("ok", 0)
    verdict = "-" if step.passed is None else ("within" if step.passed else "over")
    return (
        f"{step.concurrency:>5} {step.requests:>7} {step.rps:>8.1f} {ok:>7} "
        f"{step.requests - ok:>7} {_ms(lat['p50']):>8} {_ms(lat['p90']):>8} "
        f"{_ms(lat['p95']):>8} {_ms(lat['p99']):>8} {_ms(lat['max']):>8}  {verdict}"
    )


def text_report(report: dict[str, Any], steps: list[Step]) -> str:
    lines = [
        f"capacity of {report['service']['name']}/{report['service']['version']} at "
        f"{report['target']} ({report['date']})",
        "latency in ms; NOT OK = HTTP errors, success false, timeouts, connection errors",
        STEP_HEAD,
        *(step_line(s) for s in steps),
        "",
    ]
    for step in steps:
        if step.phases:
            lines.append(
                f"server timing at concurrency {step.concurrency} (mean/p50/p95 ms): "
                + ", ".join(
                    f"{name} {fine_ms(p['mean'])}/{fine_ms(p['p50'])}/{fine_ms(p['p95'])}"
                    for name, p in step.phases.items()
                )
            )
    if not any(s.phases for s in steps):
        lines.append("no Server-Timing header in the answers: no per-phase breakdown")
    for step in steps:
        for text, count in step.errors.items():
            lines.append(f"at concurrency {step.concurrency}: {count} \u00d7 {text}")
    lines.append(report["verdict"])
    return "\n".join(lines)


def verdict(settings: Settings, steps: list[Step], capacity: int | None) -> str:
    if settings.p95_threshold_ms is None and len(settings.steps) == 1:
        return f"throughput {steps[0].ok_rps:.1f} successful requests/s"
    limit = (
        f"p95 ≤ {settings.p95_threshold_ms:g} ms"
        if settings.p95_threshold_ms is not None
        else "no latency threshold"
    ) + f", ≤ {settings.max_error_share * 100:g} % not ok"
    if capacity is None:
        return f"capacity: none ({limit} not met even at concurrency {steps[0].concurrency})"
    best = next(s for s in steps if s.concurrency == capacity)
    more = "" if capacity != settings.steps[-1] else " (the last step; not stopped by the limit)"
    text = (
        f"capacity: concurrency {capacity}, {best.ok_rps:.1f} successful requests/s ({limit}){more}"
    )
    peak = max((s for s in steps if s.passed), key=lambda s: s.ok_rps)
    if peak.concurrency < capacity and peak.ok_rps > best.ok_rps * 1.05:
        text += (
            f"; throughput peaked at concurrency {peak.concurrency} ({peak.ok_rps:.1f}/s): "
            "more clients than that only wait longer"
        )
    return text


def run(
    args: argparse.Namespace,
    connect: Callable[[argparse.Namespace], Client],
    server_of: Callable[[argparse.Namespace], str],
) -> int:
    """Checks everything it can before any request (the target first), logs in once,
    checks the input against the service's parameters, then loads it."""
    settings = settings_of(args)
    url = check_target(server_of(args), args.target_host)
    given = read_input(args)
    if args.html and not Path(args.html).parent.is_dir():  # not found out after an hour
        raise CliError(f"cannot write {args.html}: no such directory", USAGE)
    timeout = parse_seconds(args.request_timeout)
    if not 0 < timeout <= MAX_SECONDS:  # 0 would make every request a timeout
        raise CliError(f"--request-timeout must be over 0 s, at most {MAX_SECONDS:.0f} s", USAGE)
    client = connect(args)
    name, version = args.name, args.version
    quoted = f"{urllib.parse.quote(name, safe='')}/{urllib.parse.quote(version, safe='')}"
    service = client.call("GET", f"/services/{quoted}")  # also refreshes a stored token
    body = check_input(service, given)
    target = make_target(url, name, version, client.token, body, timeout)

    def progress(step: Step) -> None:
        print(step_line(step), file=sys.stderr, flush=True)

    if not args.json:
        print(
            f"loading {name}/{version}: steps {settings.steps}, {settings.warmup:g} s warm-up "
            f"+ {settings.duration:g} s each",
            file=sys.stderr,
        )
        print(STEP_HEAD, file=sys.stderr)
    steps, capacity = asyncio.run(run_steps(target, settings, None if args.json else progress))
    report = {
        "target": urllib.parse.urlunsplit((url.scheme, url.netloc, url.path, "", "")),
        "service": {"name": name, "version": version},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {
            "steps": settings.steps,
            "durationS": settings.duration,
            "warmupS": settings.warmup,
            "p95ThresholdMs": settings.p95_threshold_ms,
            "maxErrorPercent": settings.max_error_share * 100,
            "requestTimeoutS": timeout,
            "input": body,
        },
        "steps": [s.as_json() for s in steps],
        "capacity": capacity,
        "verdict": verdict(settings, steps, capacity),
    }
    if args.json:  # printed first: an unwritable --html must not lose the figures
        print(json.dumps(report, indent=2))
    else:
        print(text_report(report, steps))
    if args.html:
        from o16n_client.capacity_html import render

        try:
            Path(args.html).write_text(render(report), encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot write {args.html}: {exc.strerror}", USAGE) from None
        if not args.json:
            print(f"report: {args.html}")
    if not any(s.outcomes.get("ok") for s in steps):
        seen = ", ".join(f"{k} {v}" for k, v in sorted(_totals(steps).items())) or "no answer"
        print(f"o16n admin: no request succeeded ({seen})", file=sys.stderr)
        return REFUSED
    return OK


def _totals(steps: list[Step]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for step in steps:
        for outcome, count in step.outcomes.items():
            totals[outcome] = totals.get(outcome, 0) + count
    return totals
