"""The JSON log formatter (``controller.logs``): whatever a call passes in ``extra``, its
line is written, as JSON; a value neither orjson nor the stdlib can encode is written as
its ``repr`` rather than the line being lost."""

from __future__ import annotations

import io
import json
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from controller import logs
from controller.logs import (
    BUFFER_LIMIT,
    FLUSH_INTERVAL,
    AccessLogger,
    BufferedStreamHandler,
    JsonFormatter,
    TextFormatter,
)


class _Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    __str__ = __repr__


def _cycle() -> dict[str, Any]:
    looped: dict[str, Any] = {}
    looped["self"] = looped
    return looped


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({1: "a"}, {"1": "a"}),  # a key orjson refuses, the stdlib takes
        (2**70, 2**70),  # beyond 64 bits
        (b"\xff", "b'\\xff'"),
        (ValueError("bad"), "bad"),
        ({(1, 2): "a"}, "{(1, 2): 'a'}"),  # a key neither takes
        (_cycle(), "{'self': {...}}"),
        (_Unprintable(), "<unprintable _Unprintable>"),
    ],
)
def test_every_line_is_written(value: Any, expected: Any) -> None:
    record = logging.LogRecord("tests.logs", logging.INFO, __file__, 1, "it %s", ("ran",), None)
    record.detail = value
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "it ran" and line["logger"] == "tests.logs"
    assert line["detail"] == expected


def test_a_text_line_is_one_line() -> None:
    """A path a client chose (``%0A`` decodes to a newline) cannot forge a line of its own
    in the text format."""
    record = logging.LogRecord("aiohttp.access", logging.INFO, __file__, 1, "request", (), None)
    record.path = '/x\n2026-12-02 08:00:00,000 WARNING controller: forged\r\x00"'
    record.status = 404
    line = TextFormatter().format(record)
    assert "\n" not in line and "\r" not in line and "\x00" not in line
    assert "path=/x\\n2026-12-02" in line and "status=404" in line


class _Stream:
    """A stream that records each write (one write is one write(2) of stderr)."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass


def _record(level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord("t", level, __file__, 1, msg, None, None)


def test_info_lines_go_out_together_and_a_warning_at_once() -> None:
    stream = _Stream()
    handler = BufferedStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        for i in range(3):
            handler.handle(_record(logging.INFO, f"line {i}"))
        assert stream.writes == []  # buffered: no write per line
        handler.handle(_record(logging.WARNING, "careful"))
        assert stream.writes == ["line 0\nline 1\nline 2\ncareful\n"]  # in order, at once
        handler.handle(_record(logging.INFO, "later"))
        handler.flush()
        assert stream.writes[1:] == ["later\n"]
    finally:
        handler.close()


def test_buffered_lines_are_written_within_the_flush_interval() -> None:
    stream = _Stream()
    handler = BufferedStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        handler.handle(_record(logging.INFO, "soon"))
        deadline = time.monotonic() + 10 * FLUSH_INTERVAL + 5
        while not stream.writes and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stream.writes == ["soon\n"]
    finally:
        handler.close()


def test_a_full_buffer_is_written_without_waiting() -> None:
    stream = _Stream()
    handler = BufferedStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        line = "x" * 1000
        for _ in range(BUFFER_LIMIT // 1000 + 1):
            handler.handle(_record(logging.INFO, line))
        assert stream.writes and len(stream.writes[0]) >= BUFFER_LIMIT
    finally:
        handler.close()


def test_close_writes_what_is_left() -> None:
    stream = _Stream()
    handler = BufferedStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.handle(_record(logging.INFO, "last words"))
    handler.close()
    assert stream.writes == ["last words\n"]


def test_json_timestamps_follow_the_clock_across_seconds() -> None:
    formatter = JsonFormatter()
    lines = []
    for created in (1_700_000_000.25, 1_700_000_000.75, 1_700_000_001.5):
        record = _record(logging.INFO, "tick")
        record.created, record.msecs = created, (created % 1) * 1000
        lines.append(json.loads(formatter.format(record))["ts"])
    assert lines == [
        "2023-11-14T22:13:20.250Z",
        "2023-11-14T22:13:20.750Z",
        "2023-11-14T22:13:21.500Z",
    ]


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """``logs.configure`` as ``serve`` calls it, writing to a string; logging as it was after."""
    root, access = logging.getLogger(), logging.getLogger("aiohttp.access")
    saved = (root.handlers[:], root.level, access.level, logs._srcfile_saved())
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    logs.configure("INFO", "json")
    try:
        yield stream
    finally:
        handler = logs._configured
        logs._configured = None
        if handler is not None:
            handler.close()
        root.handlers[:], _, _, flags = saved
        root.setLevel(saved[1])
        access.setLevel(saved[2])
        logs._srcfile_restore(flags)


class _Dropper(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return True  # drops nothing; its presence sends lines through logging


async def _access_line(stream: io.StringIO, *, through_logging: bool) -> dict[str, Any]:
    app = web.Application()
    app.router.add_post("/api/{name}/{version}", _ok)
    request = make_mocked_request(
        "POST", "/api/Iris/V1.0", app=app, headers={"User-Agent": "ua", "X-Request-Id": "r-1"}
    )
    match = await app.router.resolve(request)
    match.add_app(app)
    request._match_info = match
    access = logging.getLogger("aiohttp.access")
    dropper = _Dropper()
    if through_logging:
        access.addFilter(dropper)
    try:
        AccessLogger(access, "").log(request, web.Response(body=b"12345"), 0.0123)
    finally:
        access.removeFilter(dropper)
    assert logs._configured is not None
    logs._configured.flush()
    lines = stream.getvalue().splitlines()
    stream.seek(0)
    stream.truncate()
    assert len(lines) == 1, lines
    line: dict[str, Any] = json.loads(lines[0])
    return line


async def _ok(request: web.Request) -> web.Response:
    return web.Response()


def _only_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    """The root logger as ``serve`` has it: pytest adds its own handlers for each test."""
    monkeypatch.setattr(logging.getLogger(), "handlers", [logs._configured])


async def test_an_access_line_written_directly_is_the_formatters_line(
    configured: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    _only_ours(monkeypatch)
    assert logs._direct_handler(logging.getLogger("aiohttp.access")) is logs._configured
    direct = await _access_line(configured, through_logging=False)
    logged = await _access_line(configured, through_logging=True)
    assert direct.pop("ts")[:10] == logged.pop("ts")[:10]
    assert direct == logged
    assert list(direct) == list(logged)  # the same fields, in the same order
    assert direct["route"] == "/api/{name}/{version}" and direct["requestId"] == "r-1"


async def test_a_handler_of_a_test_still_sees_access_lines(
    configured: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    _only_ours(monkeypatch)
    catcher = logging.NullHandler()
    logging.getLogger("aiohttp.access").addHandler(catcher)
    try:
        assert logs._direct_handler(logging.getLogger("aiohttp.access")) is None
    finally:
        logging.getLogger("aiohttp.access").removeHandler(catcher)
    assert logs._direct_handler(logging.getLogger("aiohttp.access")) is logs._configured
