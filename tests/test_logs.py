"""The JSON log formatter (``controller.logs``): whatever a call passes in ``extra``, its
line is written, as JSON; a value neither orjson nor the stdlib can encode is written as
its ``repr`` rather than the line being lost."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from controller.logs import JsonFormatter, TextFormatter


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
