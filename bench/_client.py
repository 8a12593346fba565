"""The benches' one HTTP client: o16n's REST API over one keep-alive connection.

Blocking on purpose (``http.client``): a bench reads top to bottom, and a concurrent load
(``load``) is one ``Api`` per thread (``clone``), each with its own connection. Nothing
here knows the server's internals; every bench drives the server through this.
"""

from __future__ import annotations

import http.client
import itertools
import json
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from bench._server import BenchError, percentile

#: Reopen a connection idle longer than this (o16n closes idle ones after
#: O16N_HTTP_IDLE_TIMEOUT, 60 s by default), rather than retry a request: a retried POST
#: could start a second batch or session.
IDLE_REOPEN_S = 30.0


class Api:
    """One server's API as one client sees it: a connection, a bearer token."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 120) -> None:
        parts = urlsplit(url)
        self.url, self.token, self.timeout = url, token, timeout
        self._conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
        self._used = time.monotonic()

    def clone(self) -> Api:
        """Another connection with the same token (for another thread)."""
        return Api(self.url, self.token, timeout=self.timeout)

    def close(self) -> None:
        self._conn.close()

    def headers(self, content_type: str = "application/json") -> dict[str, str]:
        headers = {"Content-Type": content_type}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def response(
        self,
        method: str,
        path: str,
        body: bytes | Iterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> http.client.HTTPResponse:
        """Send a request; the response, to be read whole before the next request."""
        if time.monotonic() - self._used > IDLE_REOPEN_S:
            self._conn.close()
        try:
            self._conn.request(method, path, body=body, headers=headers or self.headers())
            answer = self._conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()
            raise BenchError(f"{method} {path.split('?')[0]}: {exc!r}") from None
        self._used = time.monotonic()
        return answer

    def send(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """The status and raw body of one request."""
        answer = self.response(method, path, body)
        try:
            return answer.status, answer.read()
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()
            raise BenchError(f"{method} {path.split('?')[0]}: {exc!r}") from None

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """The status and decoded JSON answer (text if it is not JSON) of a JSON request."""
        data = None if body is None else json.dumps(body).encode()
        status, raw = self.send(method, path, data)
        try:
            return status, json.loads(raw) if raw.strip() else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        """The JSON answer of a request that must succeed (2xx)."""
        status, answer = self.call(method, path, body)
        if not 200 <= status < 300:
            raise BenchError(f"{method} {path}: HTTP {status}: {str(answer)[:400]}")
        return answer

    def stream(self, path: str, piece: int = 1 << 20) -> Iterator[bytes]:
        """A GET's body piece by piece (a 200 is required)."""
        answer = self.response("GET", path)
        if answer.status != 200:
            raise BenchError(f"GET {path}: HTTP {answer.status}: {answer.read()[:300]!r}")
        while chunk := answer.read(piece):
            yield chunk

    # --- the calls the benches share ------------------------------------------------------

    def login(self, password: str, username: str = "admin") -> Api:
        answer = self.ok("POST", "/login", {"username": username, "password": password})
        self.token = str(answer["access_token"])
        return self

    def session(self, body: dict[str, Any] | None = None) -> str:
        """A new Python session's id."""
        answer = self.ok("POST", "/sessions", body or {"runtimeType": "Python"})
        return str(answer["sessionId"])

    def execute(self, session: str, code: str, outputs: Iterable[str] = ()) -> dict[str, Any]:
        """Run code in a session; the reply, which must say ``success: true``; ``outputs``
        are returned as a dict under ``values``."""
        body: dict[str, Any] = {"code": code}
        if names := list(outputs):
            body["outputParameters"] = names
        reply: dict[str, Any] = self.ok("POST", f"/sessions/{session}/execute", body)
        if reply.get("success") is not True:
            raise BenchError(f"execute in {session}: {str(reply.get('errorMessage'))[:400]}")
        reply["values"] = {p["name"]: p["value"] for p in reply.get("outputParameters") or []}
        return reply


def load(
    apis: list[Api],
    request: Callable[[int, int], tuple[str, bytes]],
    check: Callable[[int, bytes], bool],
    *,
    requests: int = 0,
    duration: float = 0.0,
) -> dict[str, Any]:
    """A closed-loop load: each of ``apis`` (one thread each) POSTs ``request(client, i)``
    (path, body) for i = 0, 1, ... in turn, until ``requests`` are done in all or for
    ``duration`` seconds; an answer that is not 200 or fails ``check(i, body)`` ends it."""
    latencies: list[float] = []
    issued = itertools.count()
    deadline = time.perf_counter() + duration

    def client(index: int) -> None:
        api = apis[index]
        while True:
            i = next(issued)
            if (i >= requests) if requests else (time.perf_counter() >= deadline):
                return
            path, body = request(index, i)
            sent = time.perf_counter()
            status, raw = api.send("POST", path, body)
            latencies.append(time.perf_counter() - sent)
            if status != 200 or not check(i, raw):
                raise BenchError(f"POST {path}: HTTP {status}: {raw[:300]!r}")

    started = time.perf_counter()
    with ThreadPoolExecutor(len(apis)) as pool:
        list(pool.map(client, range(len(apis))))
    elapsed = time.perf_counter() - started
    ms = sorted(s * 1000 for s in latencies)
    return {
        "requests": len(ms),
        "clients": len(apis),
        "seconds": elapsed,
        "rps": len(ms) / elapsed,
        **{f"p{p}_ms": percentile(ms, p) for p in (50, 90, 99)},
        "max_ms": ms[-1],
    }
