"""The JSON log lines the controller would write, caught for a test to read."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

from controller.logs import JsonFormatter


class JsonLines(logging.Handler):
    """Each record formatted when logged (as a stream handler does, so in the context of
    the task that logs: its request id) and read back as JSON."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@contextlib.contextmanager
def json_lines(logger: str | None = None) -> Iterator[JsonLines]:
    """The lines of ``logger`` (the root logger: every line) at INFO and above, while in
    the block."""
    handler = JsonLines()
    caught = logging.getLogger(logger)
    caught.addHandler(handler)
    level = caught.level
    caught.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        caught.setLevel(level)
        caught.removeHandler(handler)
