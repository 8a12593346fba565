"""Failed-login throttling per user name and per client address."""

from __future__ import annotations

import math
import time
from collections import deque

from controller.errors import TooManyRequestsError


class LoginThrottle:
    """Sliding-window counter of failed logins.

    After ``max_failures`` failures for one user name within ``window`` seconds, or
    ``max_per_address`` from one address, further attempts get 429 with ``Retry-After``
    until the oldest failure leaves the window. Kept in memory: a restart forgets it.
    """

    def __init__(self, max_failures: int, max_per_address: int, window: float) -> None:
        self._max_user = max_failures
        self._max_addr = max_per_address
        self._window = window
        self._by_user: dict[str, deque[float]] = {}
        self._by_addr: dict[str, deque[float]] = {}

    def check(self, username: str, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        wait = max(
            self._wait(self._by_user, username.lower(), self._max_user, now),
            self._wait(self._by_addr, address, self._max_addr, now),
        )
        if wait > 0:
            raise TooManyRequestsError(
                "too many failed logins; try again later", retry_after=math.ceil(wait)
            )

    def failed(self, username: str, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._by_user.setdefault(username.lower(), deque()).append(now)
        self._by_addr.setdefault(address, deque()).append(now)
        if len(self._by_user) + len(self._by_addr) > 100_000:
            self._sweep(now)

    def succeeded(self, username: str) -> None:
        self._by_user.pop(username.lower(), None)

    def _wait(self, table: dict[str, deque[float]], key: str, limit: int, now: float) -> float:
        times = table.get(key)
        if not times:
            return 0.0
        while times and times[0] <= now - self._window:
            times.popleft()
        if not times:
            del table[key]
            return 0.0
        if len(times) < limit:
            return 0.0
        return times[-limit] + self._window - now

    def _sweep(self, now: float) -> None:
        for table in (self._by_user, self._by_addr):
            for key in [k for k, v in table.items() if not v or v[-1] <= now - self._window]:
                del table[key]
