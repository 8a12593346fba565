"""``o16n admin capacity``: the W3C Server-Timing parser, the refusal of targets that are not
loopback nor named, the step logic and the counting of every answer against a stand-in of
the *target* (a small aiohttp server in a thread that answers like a consume endpoint, with
a Server-Timing header and a delay the test controls: the thing under test is the client),
the HTML report in a real Chromium, and one short run against a real server and service."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp import web

from o16n_client import capacity
from o16n_client.admin import main
from o16n_client.capacity import (
    Settings,
    check_target,
    make_target,
    parse_server_timing,
    phase_order,
    run_steps,
)
from o16n_client.capacity_html import phase_chart, render
from o16n_client.http import USAGE, CliError, credentials_path, stored_pair, write_credentials
from tests.live_server import LiveServer, run_server

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "token-for-the-fake"
HOSTILE = '<script>document.title="pwned"</script><img src=x onerror=alert(1)>'


# --- the W3C parser -----------------------------------------------------------------------


def test_server_timing_contract_header() -> None:
    header = (
        "auth;dur=0.05, queue;dur=0.01, acquire;dur=0.02, exec;dur=0.8, encode;dur=0.03, "
        "total;dur=0.95"
    )
    assert parse_server_timing(header) == {
        "auth": 0.05,
        "queue": 0.01,
        "acquire": 0.02,
        "exec": 0.8,
        "encode": 0.03,
        "total": 0.95,
    }


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('exec;desc="run, in; the \\"box\\"";dur=3, total;dur=4', {"exec": 3.0, "total": 4.0}),
        ('db;dur="12.5"', {"db": 12.5}),
        ("cache;desc=hit, total;dur=1", {"total": 1.0}),  # no dur: no figure
        ("miss, total ; DUR = 2 ", {"total": 2.0}),  # spaces, case of the parameter name
        ("a;dur=1;dur=2, a;dur=5", {"a": 1.0}),  # the first dur, the first metric
        ("a;dur=-1, b;dur=nan, c;dur=inf, d;dur=x, e;dur=", {}),
        ("", {}),
        (",,,;;;===", {}),
        ('"unterminated;dur=1, ok;dur=2', {}),  # all inside an open quote
        ("bad name;dur=1, good-name;dur=1e1", {"good-name": 10.0}),
        ("\x00\xff;dur=1, x;dur=0", {"x": 0.0}),
    ],
)
def test_server_timing_garbage_never_crashes(header: str, expected: dict[str, float]) -> None:
    assert parse_server_timing(header) == expected


def test_phase_order_known_first_then_others_by_name() -> None:
    names = {"total", "zeta", "exec", "auth", "alpha", "restore"}
    assert phase_order(names) == ["auth", "restore", "exec", "total", "alpha", "zeta"]


# --- refusing targets ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000", "http://localhost:1", "http://[::1]:80/", "https://127.9.9.9"]
)
def test_loopback_targets_are_allowed(url: str) -> None:
    assert check_target(url, None).hostname


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("http://example.com:8000", None),
        ("http://10.0.0.5:8000", None),
        ("http://example.com:8000", "example.org"),  # named, but not this one
        ("http://localhost.example.com", None),
        ("ftp://127.0.0.1", None),
    ],
)
def test_other_targets_are_refused(url: str, named: str | None) -> None:
    with pytest.raises(CliError) as caught:
        check_target(url, named)
    assert caught.value.code == USAGE


def test_a_localhost_name_must_resolve_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """``x.localhost`` is loopback only if the resolver says so: without a local answer it
    goes to DNS (and the search domains), which may answer with any host."""
    real = socket.getaddrinfo
    elsewhere = {"svc.localhost": "10.0.0.5", "both.localhost": "127.0.0.1"}

    def resolve(host: str, *args: Any, **kwargs: Any) -> Any:
        if host in elsewhere:
            found = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (elsewhere[host], 0))]
            if host == "both.localhost":
                found.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.7", 0)))
            return found
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    for url in ("http://svc.localhost:8000", "http://both.localhost", "http://no.such.localhost"):
        with pytest.raises(CliError):
            check_target(url, None)
    assert check_target("http://localhost:1", None).hostname == "localhost"


def test_a_named_target_is_allowed() -> None:
    assert check_target("http://Example.com:8000", "example.com").hostname == "example.com"
    assert check_target("http://[2001:db8::1]:80", "[2001:db8::1]").port == 80


def test_refusal_and_bounds_are_exit_2_before_any_request(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # 192.0.2.1 is TEST-NET-1: were a request sent, it would hang or fail as unreachable (3)
    monkeypatch.setenv("O16N_TOKEN", "t")
    base = ["capacity", "S", "1", "--server", "http://192.0.2.1:9", "--input", "{}"]
    assert main(base) == USAGE
    assert "--target-host 192.0.2.1" in capsys.readouterr().err
    local = ["capacity", "S", "1", "--server", "http://127.0.0.1:9", "--input", "{}"]
    for extra in (
        ["--concurrency", "257"],
        ["--concurrency", "0"],
        ["--duration", "2h"],
        ["--step", "1,2,4", "--duration", "20m"],  # 3 steps of 20 min: over the hour
        ["--step", "4,2"],
        ["--step", "1,x"],
        ["--duration", "soon"],
        ["--max-errors", "150"],
        ["--request-timeout", "0"],
        ["--max-concurrency", "0"],
    ):
        assert main(local + extra) == USAGE, extra
    assert main([*local[:-2], "--input", "[1]"]) == USAGE
    assert main([*local, "--input-file", "/nonexistent"]) == USAGE


def _step(concurrency: int, ok_rps: float, passed: bool) -> capacity.Step:
    latency = {"mean": 1.0, "p50": 1.0, "p90": 1.0, "p95": 1.0, "p99": 1.0, "max": 1.0}
    n = int(ok_rps)
    return capacity.Step(concurrency, 1.0, n, ok_rps, ok_rps, {"ok": n}, latency, {}, 0, {}, passed)


def test_the_verdict_names_the_capacity_and_a_throughput_peak_before_it() -> None:
    settings = Settings([1, 2, 4, 8], 1.0, 0.0, 50.0, 0.01)
    steps = [_step(1, 100, True), _step(2, 200, True), _step(4, 150, True), _step(8, 90, False)]
    text = capacity.verdict(settings, steps, 4)
    assert text.startswith("capacity: concurrency 4, 150.0 successful requests/s (p95 ≤ 50 ms")
    assert "peaked at concurrency 2 (200.0/s)" in text
    assert "peaked" not in capacity.verdict(settings, steps[:2], 2)
    assert capacity.verdict(settings, [_step(1, 5, False)], None).startswith("capacity: none")
    alone = Settings([3], 1.0, 0.0, None, 0.01)
    assert capacity.verdict(alone, [_step(3, 42, True)], 3) == (
        "throughput 42.0 successful requests/s"
    )


def test_the_iris_bench_summarises_a_step_nothing_answered(tmp_path: Path) -> None:
    """A last step whose every request timed out has null latencies in the JSON: the
    bench's summary says '-', and still writes its figures."""
    from bench.capacity_iris import summarise

    lat = {"mean": 1.0, "p50": 1.0, "p90": 1.0, "p95": 1.0, "p99": 1.0, "max": 1.0}
    steps = [
        {"concurrency": 1, "requestsPerSecond": 9.0, "requests": 9, "outcomes": {"ok": 9}},
        {"concurrency": 2, "requestsPerSecond": 2.0, "requests": 2, "outcomes": {"timeout": 2}},
    ]
    steps[0] |= {"latencyMs": lat, "phasesMs": {}}
    steps[1] |= {"latencyMs": dict.fromkeys(lat), "phasesMs": {}}
    machine = {"load_1min": 0.5, "other_containers": 0}
    figures = {
        "capacity": {"steps": steps, "verdict": "capacity: concurrency 1"},
        "machine_at_start": machine,
        "machine_at_end": machine,
    }
    args = argparse.Namespace(
        pool_initial=2, pool_max=2, warmup=0, duration=1, html="r.html", json_out=tmp_path / "j"
    )
    text = summarise(figures, args)
    assert "       2      2.0        -        -        -  2" in text
    assert json.loads(args.json_out.read_text())["steps"][1]["latencyMs"]["p50"] is None


# --- a stand-in for the target ------------------------------------------------------------


@dataclass
class Fake:
    """Answers ``POST /api/Fake/1`` like a consume endpoint: 2 ms while at most ``fast``
    requests are in flight, else ``slow`` s; ``mode`` picks the answers."""

    url: str = ""
    fast: int = 4
    slow: float = 0.1
    mode: str = "ok"
    in_flight: int = 0
    requests: int = 0
    #: every connection's transport, kept alive so that no two share an id()
    connections: dict[int, object] = field(default_factory=dict)
    bad_tokens: int = 0
    inputs: list[str] = field(default_factory=lambda: ["x"])
    #: where GET /services/... redirects to, when set
    redirect: str = ""

    async def consume(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.bad_tokens += 1
        self.connections[id(request.transport)] = request.transport
        self.requests += 1
        n = self.requests
        self.in_flight += 1
        try:
            await asyncio.sleep(0.002 if self.in_flight <= self.fast else self.slow)
        finally:
            self.in_flight -= 1
        body = await request.json()
        timing = 'auth;dur=0.05, exec;dur=1.5;desc="run, it", total;dur=2, custom;dur=0.2'
        if self.mode == "mixed":
            if n % 4 == 1:
                return web.json_response({"message": "boom"}, status=503)
            if n % 4 == 2:
                return web.json_response(
                    {"success": False, "errorMessage": HOSTILE}, headers={"Server-Timing": "%%"}
                )
            if n % 4 == 3:
                return web.json_response({"success": True})  # no Server-Timing
        if self.mode == "down":
            return web.json_response({"message": "no container"}, status=503)
        if self.mode == "bare":
            return web.json_response({"success": True})
        if self.mode == "chunked":
            resp = web.StreamResponse(headers={"Server-Timing": timing})
            resp.content_type = "application/json"
            await resp.prepare(request)
            await resp.write(b'{"success": ')
            await resp.write(b"true}")
            await resp.write_eof()
            return resp
        return web.json_response(
            {"success": True, "outputParameters": {"y": body["x"]}},
            headers={"Server-Timing": timing},
        )

    async def service(self, request: web.Request) -> web.Response:
        if self.redirect:
            raise web.HTTPFound(self.redirect)
        if request.match_info["name"] != "Fake":
            return web.json_response({"message": "no such service"}, status=404)
        return web.json_response(
            [{"name": "Fake", "inputParameterDefinitions": [{"name": n} for n in self.inputs]}]
        )


@pytest.fixture
def fake() -> Iterator[Fake]:
    """The stand-in, served from a thread of its own (the client runs its own loop)."""
    state = Fake()
    app = web.Application()
    app.router.add_post("/api/{name}/{version}", state.consume)
    app.router.add_get("/services/{name}/{version}", state.service)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}"
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def _target(fake: Fake) -> capacity.Target:
    url = check_target(fake.url, None)
    return make_target(url, "Fake", "1", TOKEN, {"x": 1}, timeout=5)


def _capacity(fake: Fake, *extra: str) -> int:
    """``o16n admin capacity Fake 1`` against the stand-in, input ``{"x": 1}``."""
    return main(["capacity", "Fake", "1", "--server", fake.url, "--input", '{"x": 1}', *extra])


def test_steps_stop_at_the_first_over_the_threshold(fake: Fake) -> None:
    settings = Settings([1, 2, 4, 8, 16], 0.6, 0.2, 50.0, 0.01)
    seen: list[int] = []
    steps, found = asyncio.run(
        run_steps(_target(fake), settings, lambda s: seen.append(s.concurrency))
    )
    assert found == 4
    assert [s.concurrency for s in steps] == seen == [1, 2, 4, 8]  # 16 never ran
    assert [s.passed for s in steps] == [True, True, True, False]
    assert steps[-1].latency_ms["p95"] > 50 > steps[2].latency_ms["p95"]
    for step in steps:
        assert step.requests > 0 and step.outcomes == {"ok": step.requests}
        assert step.rps == pytest.approx(step.requests / 0.6)
        assert list(step.phases) == ["auth", "exec", "total", "custom"]
        assert step.phases["exec"]["mean"] == pytest.approx(1.5)
        assert step.timed == step.requests
    # one keep-alive connection per worker, the token sent each time
    assert len(fake.connections) == 1 + 2 + 4 + 8
    assert fake.bad_tokens == 0
    # the warm-up is not counted: more requests were answered than the steps hold
    assert fake.requests > sum(s.requests for s in steps)


def test_every_answer_is_counted_by_outcome(fake: Fake) -> None:
    fake.mode = "mixed"
    steps, found = asyncio.run(run_steps(_target(fake), Settings([2], 0.5, 0.1, None, 0.01)))
    step = steps[0]
    assert found is None and step.passed is False  # 75 % not ok is over 1 %
    assert set(step.outcomes) == {"ok", "failed", "http 503"}
    assert sum(step.outcomes.values()) == step.requests
    assert abs(step.outcomes["http 503"] - step.requests / 4) <= 2
    assert step.errors  # the failures' messages, kept as text
    assert 0 < step.timed < step.requests  # answers without a header are not timed


def test_chunked_answers_and_timeouts(fake: Fake) -> None:
    fake.mode = "chunked"
    steps, _ = asyncio.run(run_steps(_target(fake), Settings([2], 0.4, 0.1, None, 0.0)))
    assert steps[0].outcomes == {"ok": steps[0].requests} and steps[0].phases
    fake.mode, fake.fast, fake.slow = "ok", 0, 1.0
    target = _target(fake)
    target.timeout = 0.2
    steps, _ = asyncio.run(run_steps(target, Settings([2], 0.7, 0.0, None, 0.0)))
    assert set(steps[0].outcomes) == {"timeout"}
    assert all(v is None or v != v for v in [steps[0].latency_ms["p50"]])  # none answered


def test_a_hung_server_does_not_stretch_a_step(fake: Fake) -> None:
    fake.fast, fake.slow = 0, 3.0  # every answer takes 3 s; the request timeout is 5 s
    started = time.monotonic()
    steps, found = asyncio.run(run_steps(_target(fake), Settings([2, 4], 0.3, 0.0, None, 0.01)))
    assert time.monotonic() - started < 1.5
    assert found is None and steps[0].requests == 0 and steps[0].passed is False


def test_the_cli_reports_a_table_json_and_html(
    fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("O16N_TOKEN", TOKEN)
    args = ["capacity", "Fake", "1", "--server", fake.url, "--duration", "1s", "--warmup", "0"]
    # the input is checked against the service's parameters first
    assert main([*args, "--input", '{"y": 1}']) == USAGE
    assert "unknown ['y']" in capsys.readouterr().err and fake.requests == 0
    assert main(args) == USAGE
    assert main(["capacity", "Nope", "1", "--server", fake.url, "--input", "{}"]) == 1

    html_path = tmp_path / "report.html"
    code = main(
        [
            *args,
            "--input",
            '{"x": 2}',
            "--step",
            "1,2",
            "--p95-threshold",
            "1s",
            "--html",
            str(html_path),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "capacity: concurrency 2" in out
    assert (
        "server timing at concurrency 1 (mean/p50/p95 ms): "
        "auth 0.050/0.050/0.050, exec 1.50/1.50/1.50" in out
    )
    page = html_path.read_text()
    assert page.count("<svg") == 3 and "<script" not in page
    for fetching in ("src=", "href=", "url(", "@import"):  # self-contained
        assert fetching not in page

    code = main([*args, "--input", '{"x": 2}', "--concurrency", "3", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["capacity"] == 3 and report["steps"][0]["concurrency"] == 3
    assert report["steps"][0]["phasesMs"]["total"]["mean"] == 2.0

    # nothing succeeded (a wrong token, a broken service): exit 1, the report all the same
    fake.mode = "down"
    code = main([*args, "--input", '{"x": 2}', "--concurrency", "2", "--json"])
    captured = capsys.readouterr()
    assert code == 1 and "no request succeeded (http 503 " in captured.err
    assert set(json.loads(captured.out)["steps"][0]["outcomes"]) == {"http 503"}


def test_an_unwritable_report_loses_no_run(
    fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report in a directory that does not exist is refused before any request; one that
    cannot be written after the run still leaves the figures printed."""
    monkeypatch.setenv("O16N_TOKEN", TOKEN)
    args = ["--duration", "1s", "--warmup", "0", "--json"]
    assert _capacity(fake, *args, "--html", str(tmp_path / "no" / "r.html")) == USAGE
    assert fake.requests == 0 and "no such directory" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()  # a directory where the file should go
    assert _capacity(fake, *args, "--html", str(tmp_path / "taken")) == USAGE
    captured = capsys.readouterr()
    assert json.loads(captured.out)["steps"][0]["requests"] > 0
    assert "cannot write" in captured.err


def test_the_report_escapes_what_came_from_outside() -> None:
    step = {
        "concurrency": 1,
        "requests": 3,
        "requestsPerSecond": 3.0,
        "okPerSecond": 0.0,
        "outcomes": {HOSTILE: 3},
        "latencyMs": {"mean": 1.0, "p50": 1.0, "p90": 1.0, "p95": 1.0, "p99": 1.0, "max": 1.0},
        "serverTimed": 3,
        "phasesMs": {HOSTILE: {"count": 3, "mean": 1.0, "p50": 1.0, "p95": 1.0}},
        "errors": {HOSTILE: 3},
        "passed": False,
    }
    report = {
        "target": "http://127.0.0.1:1/" + HOSTILE,
        "service": {"name": HOSTILE, "version": HOSTILE},
        "date": HOSTILE,
        "settings": {
            "steps": [1],
            "durationS": 1.0,
            "warmupS": 0.0,
            "p95ThresholdMs": None,
            "maxErrorPercent": 1.0,
            "requestTimeoutS": 30.0,
            "input": {HOSTILE: HOSTILE},
        },
        "steps": [step],
        "capacity": None,
        "verdict": HOSTILE,
    }
    page = render(report)
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;" in page


def test_the_phase_chart_weighs_a_phase_by_the_answers_that_had_it() -> None:
    """One answer in ten queued 50 ms: that is 5 ms per request, not 50, and the bar
    must not pass the server's total."""
    step = {
        "concurrency": 2,
        "serverTimed": 10,
        "latencyMs": {"mean": 8.0},
        "phasesMs": {
            "queue": {"count": 1, "mean": 50.0, "p50": 50.0, "p95": 50.0},
            "exec": {"count": 10, "mean": 1.0, "p50": 1.0, "p95": 1.0},
            "total": {"count": 10, "mean": 7.0, "p50": 2.0, "p95": 50.0},
        },
    }
    chart = phase_chart([step])
    assert "<title>queue: 5.00 ms</title>" in chart
    assert "<title>exec: 1.00 ms</title>" in chart
    assert "<title>server, unnamed: 1.00 ms</title>" in chart  # 7 - 5 - 1
    assert "<title>outside the server: 1.00 ms</title>" in chart


def test_no_server_timing_is_said_not_charted(
    fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.mode = "bare"
    monkeypatch.setenv("O16N_TOKEN", TOKEN)
    html_path = tmp_path / "r.html"
    code = _capacity(fake, "--duration", "1s", "--warmup", "0", "--html", str(html_path))
    assert code == 0
    assert "no Server-Timing header" in capsys.readouterr().out
    page = html_path.read_text()
    assert "no per-phase breakdown" in page and page.count("<svg") == 2


# --- a raw HTTP/1.1 server, for what aiohttp would never send ---------------------------

BODY = b'{"success": true}'
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b"Server-Timing: auth;dur=0.05, exec;dur=1.5, encode;dur=0.1, total;dur=2\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    await reader.readexactly(length)


async def _canned(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A well-formed keep-alive answer to each request, as fast as it can."""
    while True:
        await _read_request(reader)
        writer.write(ANSWER)


@dataclass
class Raw:
    """A server in a thread of its own that answers with ``handler`` (bytes, not aiohttp)."""

    url: str = ""
    handler: Handler = _canned
    #: the connections being served, closed at the end of the test
    serving: set[asyncio.Task[None]] = field(default_factory=set)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.serving.add(task)
        try:
            with contextlib.suppress(Exception):
                await self.handler(reader, writer)
        finally:
            self.serving.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def target(self, timeout: float = 5.0) -> capacity.Target:
        return make_target(check_target(self.url, None), "Fake", "1", TOKEN, {"x": 1}, timeout)


@pytest.fixture
def raw() -> Iterator[Raw]:
    state = Raw()
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(state.serve, "127.0.0.1", 0))
    state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:

        async def shut() -> None:
            server.close()
            for task in list(state.serving):
                task.cancel()
            await asyncio.gather(*state.serving, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(server.wait_closed())
        loop.close()


def test_a_step_keeps_nothing_per_request(raw: Raw, monkeypatch: pytest.MonkeyPatch) -> None:
    """An hour at thousands of requests a second must not keep millions of records: the
    memory a step holds does not grow with its requests once the reservoir is full."""
    monkeypatch.setattr(capacity, "RESERVOIR", 64, raising=False)
    target = raw.target()

    def measured(duration: float) -> tuple[int, int]:
        """Requests made in a step of ``duration`` and the peak bytes traced during it."""
        gc.collect()  # the garbage of earlier tests would be noise
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        step = asyncio.run(capacity.run_step(target, 4, duration, 0.0))
        return step.requests, tracemalloc.get_traced_memory()[1] - base

    tracemalloc.start()
    try:
        seen = [measured(0.3), measured(2.0)]
        # some 250 KB of the peak is noise that does not grow with requests: enough of
        # them make it small per request, on a loaded machine too (a longer step then)
        for _ in range(3):
            (few, _), (many, _) = seen
            if many - few >= 4000:
                break
            seen[1] = measured(min(10.0, 2.0 * 4000 / max(many - few, 1)))
    finally:
        tracemalloc.stop()
    (few, small), (many, large) = seen
    assert many - few > 2000, seen
    # bytes a request: a record was about 700; uncollected garbage makes up to ~110 of noise
    assert (large - small) / (many - few) < 250, seen


def test_the_reservoir_is_bounded_and_its_percentiles_close() -> None:
    tally = capacity.Tally((0.0, 1.0), size=2000)
    rng = random.Random(1)
    values = [rng.random() * 100 for _ in range(100_000)]
    for v in values:
        tally.add(0.5, v / 1000, "ok", True, {"exec": v}, error=f"e{int(v)}")
        tally.add(1.5, 1.0, "ok", True)  # after the window: not counted
    step = capacity.Step.of(1, 1.0, tally)
    assert len(tally.latency.values) == len(tally.phases["exec"].values) == 2000
    assert len(tally.errors) == capacity.MAX_KINDS + 1 and "other" in tally.errors
    assert step.requests == step.timed == 100_000 == int(step.phases["exec"]["count"])
    exact = sorted(values)
    assert step.latency_ms["mean"] == pytest.approx(sum(values) / len(values))
    assert step.latency_ms["max"] == exact[-1]
    for p in (50, 90, 95, 99):
        assert step.latency_ms[f"p{p}"] == pytest.approx(capacity.percentile(exact, p), abs=1.5)
    small = capacity.Tally((0.0, 1.0), size=2000)
    for v in values[:2000]:  # no more than the reservoir holds: exact
        small.add(0.5, v / 1000, "ok", True)
    assert capacity.Step.of(1, 1.0, small).latency_ms["p95"] == pytest.approx(
        capacity.percentile(sorted(values[:2000]), 95)
    )


async def _endless_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\n")
    while True:
        writer.write(b"X-More: yes\r\n" * 1000)
        await writer.drain()


async def _long_status(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        await _read_request(reader)
        writer.write(ANSWER.replace(b"200 OK", b"20000 OK"))


async def _continues(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + b"HTTP/1.1 103 Early Hints\r\n\r\n")
        writer.write(ANSWER)


async def _continues_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    while True:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" * 1000)
        await writer.drain()


def test_interim_answers_are_skipped(raw: Raw) -> None:
    raw.handler = _continues
    step = asyncio.run(capacity.run_step(raw.target(), 1, 0.5, 0.0))
    assert step.requests > 0 and step.outcomes == {"ok": step.requests}, step.outcomes


@pytest.mark.parametrize("handler", [_endless_headers, _long_status, _continues_forever])
def test_an_answer_head_out_of_bounds_is_an_error(raw: Raw, handler: Handler) -> None:
    """Headers that never end are an error at 64 KiB, not held until the request times
    out; a status is three digits (each odd one would be an outcome of its own)."""
    raw.handler = handler
    step = asyncio.run(capacity.run_step(raw.target(timeout=3), 1, 1.0, 0.0))
    assert set(step.outcomes) == {"error"}, step.outcomes


async def _to_the_end(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """HTTP/1.0 style: no length, the body ends with the connection, sent in two parts."""
    await _read_request(reader)
    writer.write(b'HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{"success": ')
    await writer.drain()
    await asyncio.sleep(0.02)
    writer.write(b"true}")
    await writer.drain()


def test_an_answer_without_length_is_read_to_the_end(raw: Raw) -> None:
    raw.handler = _to_the_end
    step = asyncio.run(capacity.run_step(raw.target(), 1, 0.5, 0.0))
    assert step.requests > 0 and step.outcomes == {"ok": step.requests}, step.outcomes


def test_a_stored_login_is_checked_as_its_server(
    fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --server or a token in the environment, the stored login's server is the
    one checked and loaded: the same choice connect makes for the token."""
    for name in ("O16N_TOKEN", "O16N_SERVER", "O16N_USERNAME", "O16N_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    login = {"access_token": TOKEN, "refresh_token": "r", "expires_on": time.time() + 3600}
    args = ["capacity", "Fake", "1", "--input", '{"x": 1}', "--duration", "1s"]
    write_credentials(credentials_path(), stored_pair("http://192.0.2.1:9", "admin", login))
    assert main([*args, "--warmup", "0"]) == USAGE  # not loopback, not named
    assert "--target-host 192.0.2.1" in capsys.readouterr().err
    write_credentials(credentials_path(), stored_pair(fake.url, "admin", login))
    assert main([*args, "--warmup", "0"]) == 0
    assert fake.requests > 0 and fake.bad_tokens == 0


def test_the_token_does_not_follow_a_redirect(
    fake: Fake, raw: Raw, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service look-up before the load is answered with a redirect to another server:
    it is an error, and nothing (the bearer token least of all) is sent there."""
    heads: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]")
        await writer.drain()

    raw.handler = record
    fake.redirect = f"{raw.url}/services/Fake/1"
    monkeypatch.setenv("O16N_TOKEN", TOKEN)
    assert _capacity(fake, "--duration", "0.2s", "--warmup", "0") == 1
    assert heads == [] and fake.requests == 0
    assert "302" in capsys.readouterr().err


# --- the report in a real browser ---------------------------------------------------------


def test_the_report_renders_in_chromium(
    fake: Fake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.admin.test_console import CHROMIUM_FLAGS, _chromium

    executable = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    monkeypatch.setenv("O16N_TOKEN", TOKEN)
    html_path = tmp_path / "report.html"
    code = _capacity(
        fake,
        *("--step", "1,2,4,8", "--p95-threshold", "50ms"),
        *("--duration", "1s", "--warmup", "0.1s", "--html", str(html_path)),
    )
    assert code == 0
    errors: list[str] = []
    requested: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda r: requested.append(r.url))
            page.goto(html_path.as_uri())
            assert page.locator("svg").count() == 3
            assert page.locator("svg polyline").count() == 3  # p50, p95, p99
            box = page.locator("svg").first.bounding_box()
            assert box is not None and box["width"] > 600 and box["height"] > 150
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert requested == [html_path.as_uri()]  # nothing else fetched


# --- against a real server ----------------------------------------------------------------


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    yield from run_server()


@pytest.mark.docker
def test_a_short_run_against_a_real_service(live: LiveServer, tmp_path: Path) -> None:
    resp = requests.post(
        f"{live.url}/services/Adder/1",
        json={
            "code": "y = x + 1",
            "runtimeType": "Python",
            "inputParameterDefinitions": [{"name": "x", "type": "integer"}],
            "outputParameterDefinitions": [{"name": "y", "type": "integer"}],
        },
        headers=live.headers,
        timeout=120,
    )
    assert resp.status_code == 201, resp.text
    token = live.headers["Authorization"].removeprefix("Bearer ")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("O16N_")}
    html_path = tmp_path / "iris.html"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "controller",
            "admin",
            "capacity",
            "Adder",
            "1",
            "--input",
            '{"x": 41}',
            "--concurrency",
            "2",
            "--duration",
            "2s",
            "--warmup",
            "1s",
            "--json",
            "--html",
            str(html_path),
        ],
        env={
            **clean,
            "PYTHONPATH": f"{ROOT}:{ROOT / 'runtime_image'}",
            "O16N_SERVER": live.url,
            "O16N_TOKEN": token,
            "HOME": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    step = report["steps"][0]
    assert step["requests"] > 10 and step["outcomes"] == {"ok": step["requests"]}
    assert step["latencyMs"]["p50"] > 0
    assert "<svg" in html_path.read_text()
