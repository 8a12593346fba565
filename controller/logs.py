"""Structured logs: one JSON object per line (or plain text), with ``extra`` fields kept.

Lines go to stderr in batches (``BufferedStreamHandler``): the access log writes a line
per request, and one write(2) per line on the event loop was the largest single cost of a
consume request. A warning or worse goes out at once, with every line before it.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any

import orjson
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import Application, BaseRequest, HTTPMethodNotAllowed, Request, StreamResponse

from controller.auth.roles import IDENTITY
from controller.http.client_address import request_address
from controller.http.middlewares import request_id_of
from controller.http.request_id import REQUEST_ID
from controller.settings import SETTINGS

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


#: seconds an INFO line may wait in the buffer before it is written
FLUSH_INTERVAL = 0.2
#: characters of buffered lines that are written at once, without waiting
BUFFER_LIMIT = 64 << 10


class BufferedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes its lines in batches: at least every
    ``FLUSH_INTERVAL`` seconds (a daemon thread), as soon as ``BUFFER_LIMIT`` characters
    wait, and at once for a WARNING or worse (with every line before it, in order).
    Logging's own shutdown (atexit) flushes what is left; a process killed outright loses
    at most the last ``FLUSH_INTERVAL`` seconds of INFO lines, as nginx's buffered
    access log does."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._size = 0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._flusher, name="o16n-log-flush", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:  # called under self.lock
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._pending.append(line)
        self._size += len(line)
        if record.levelno >= logging.WARNING or self._size >= BUFFER_LIMIT:
            self._write_pending(record)

    def write_line(self, line: str) -> None:
        """A formatted line, as ``emit`` would buffer it (the access log's direct path)."""
        self.acquire()
        try:
            self._pending.append(line + self.terminator)
            self._size += len(line)
            if self._size >= BUFFER_LIMIT:
                self._write_pending(None)
        finally:
            self.release()

    def flush(self) -> None:
        self.acquire()
        try:
            self._write_pending(None)
        finally:
            self.release()

    def close(self) -> None:
        self._stopped.set()
        self.flush()
        super().close()

    def _write_pending(self, record: logging.LogRecord | None) -> None:
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        self._size = 0
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:
            if record is not None:
                self.handleError(record)

    def _flusher(self) -> None:
        while not self._stopped.wait(FLUSH_INTERVAL):
            if self._pending:
                self.flush()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _second(int(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        try:  # orjson: a line costs a tenth (the access log writes one per request)
            return orjson.dumps(entry, default=str).decode()
        except TypeError:  # an integer beyond 64 bits, a key not a str, a cycle
            pass
        try:
            return json.dumps(entry, default=str, ensure_ascii=False)
        except Exception:  # a key json refuses too, a cycle: the line all the same, in reprs
            plain = {k: v if isinstance(v, str) else _printable(v) for k, v in entry.items()}
            return json.dumps(plain, ensure_ascii=False)


_last_second: tuple[int, str] = (-1, "")


def _second(created: int) -> str:
    """``created`` as ISO 8601 UTC to the second, made once a second, not once a line."""
    global _last_second
    second, text = _last_second
    if second != created:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        _last_second = (created, text)
    return text


def _printable(value: Any) -> str:
    """``repr(value)``, or its type's name when even that fails: logging never loses a line
    to what a caller put in ``extra``."""
    try:
        return repr(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def _one_line(value: Any) -> str:
    """A text line's field, control characters escaped: a path a client chose (``%0A``
    decodes to a newline) must not start a forged line of its own."""
    try:
        text = str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    """What the call added with ``extra={...}``, and the id of the request being handled."""
    extras = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
    request_id = REQUEST_ID.get()
    if request_id is not None:
        extras.setdefault("requestId", request_id)
    return extras


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={_one_line(v)}" for k, v in _extras(record).items())
        base = (
            f"{self.formatTime(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        )
        text = f"{base} {extras}" if extras else base
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _srcfile_saved() -> tuple[Any, ...]:
    """What ``configure`` changes of logging's module state (for tests to put back)."""
    return (logging.logThreads, logging.logProcesses, logging.logMultiprocessing, logging._srcfile)


def _srcfile_restore(saved: tuple[Any, ...]) -> None:
    logging.logThreads, logging.logProcesses, logging.logMultiprocessing, logging._srcfile = saved


def configure(level: str, fmt: str) -> None:
    # Nothing we write needs the caller's file and line, thread or process names: each
    # record would look them up (a walk up the stack for the first) for nothing.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None  # the logging HOWTO's "Optimization" section
    global _configured
    handler = _configured = BufferedStreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(level)
    for noisy in ("urllib3", "docker", "aiosqlite"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


_wall_clock = time.time  # (``AccessLogger.log``'s argument ``time`` hides the module)

#: the handler ``configure`` installed (``None`` before, as in most tests)
_configured: BufferedStreamHandler | None = None


def _direct_handler(logger: logging.Logger) -> BufferedStreamHandler | None:
    """The handler an INFO line of ``logger`` may be written to directly, without a
    ``LogRecord``: the JSON one ``configure`` installed, when it is the only handler the
    line would reach and no filter could drop or change it. Otherwise (a test's handler,
    text lines) ``None``: the line goes through ``logging``."""
    handler = _configured
    if handler is None or not isinstance(handler.formatter, JsonFormatter) or handler.filters:
        return None
    if not logger.isEnabledFor(logging.INFO) or handler.level > logging.INFO:
        return None
    node: logging.Logger | None = logger
    while node is not None:
        if node.filters or node.disabled:
            return None
        if node.handlers:
            return handler if node.handlers == [handler] and node.parent is None else None
        node = node.parent if node.propagate else None
    return None


class AccessLogger(AbstractAccessLogger):
    """One structured line per request, what ML Server logged (Operation,
    UserPrincipalName, RemoteIpAddress, CorrelationId) and more.

    ``route`` is the route's template (``/api/{name}/{version}``), never the path: paths
    hold session ids, file and object names, a refresh token; a 405's is the template of
    the route its path matched. A request whose path matched no route (404) has no
    template, so its path is logged instead, shortened: what scanners and
    misconfigured clients ask for is what an operator looks for there. The query string
    is never logged (a token may ride in one). The source address is the client's, as
    ``O16N_TRUSTED_PROXIES`` lets the controller believe ``X-Forwarded-For``."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        identity = request.get(IDENTITY)
        route, remote = None, request.remote
        routed = _routed(request)
        if routed is not None:
            route, app = routed
            if SETTINGS in app:
                remote = request_address(request, app[SETTINGS].trusted_networks)
        entry: dict[str, Any] = {
            "method": request.method,
            "route": route,
            "status": response.status,
            "ms": round(time * 1000, 2),
            "user": identity.username if identity else None,
            "remote": remote,
            "requestId": request_id_of(request),
            "bytes": response.body_length,
            "userAgent": request.headers.get("User-Agent", "")[:_MAX_FIELD] or None,
        }
        if route is None:
            entry["path"] = request.path[:_MAX_FIELD]
        direct = _direct_handler(self.logger)
        if direct is None:
            self.logger.info("request", extra=entry)
            return
        # JsonFormatter's line for this call, without the record it would cost to make it
        # (a third of the controller's work on a consume request, with the default settings)
        created = _wall_clock()
        line = {
            "ts": f"{_second(int(created))}.{int(created % 1 * 1000):03d}Z",
            "level": "info",
            "logger": self.logger.name,
            "msg": "request",
            **entry,
        }
        try:
            text = orjson.dumps(line).decode()
        except TypeError:  # a lone surrogate in a path, say: the formatter's fallbacks
            self.logger.info("request", extra=entry)
            return
        direct.write_line(text)


def _routed(request: BaseRequest) -> tuple[str | None, Application] | None:
    """The template of the request's route (``None``: no route matched) and its app;
    ``None`` for a request that never reached the router (aiohttp answered a malformed
    request itself)."""
    if not isinstance(request, Request):
        return None
    try:
        match_info, app = request.match_info, request.app
    except (AssertionError, AttributeError):
        return None
    resource = match_info.route.resource
    if resource is not None:
        return resource.canonical, app
    if isinstance(match_info.http_exception, HTTPMethodNotAllowed):
        return _template_of(app, request.rel_url.path_safe), app
    return None, app


def _template_of(app: Application, path: str) -> str | None:
    """The template of the route whose path a 405's request matched (its method did not):
    that path may hold a secret (``GET /login/refreshToken/{refreshToken}``). A rare
    answer, so a walk over the routes, as the router's own match does."""
    for resource in app.router.resources():
        info = resource.get_info()
        pattern = info.get("pattern")
        if pattern.fullmatch(path) if pattern is not None else info.get("path") == path:
            return resource.canonical
    return None


_MAX_FIELD = 200  # characters of a client-chosen field (a path, a user agent) in a line
