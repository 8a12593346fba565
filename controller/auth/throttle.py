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

    Attempts still being checked count too (``begin``/``end``): otherwise any number of
    concurrent guesses would all pass ``check`` before the first failure was recorded.
    """

    def __init__(self, max_failures: int, max_per_address: int, window: float) -> None:
        self._max_user = max_failures
        self._max_addr = max_per_address
        self._window = window
        self._by_user: dict[str, deque[float]] = {}
        self._by_addr: dict[str, deque[float]] = {}
        self._pending: dict[str, int] = {}  # attempts being checked, by "u:name" and "a:addr"

    def begin(self, username: str, address: str) -> None:
        """Before a password is checked: ``check``, then count the attempt as in progress
        until ``end``."""
        self.check(username, address)
        for key in self._keys(username, address):
            self._pending[key] = self._pending.get(key, 0) + 1

    def end(self, username: str, address: str) -> None:
        """The attempt ``begin`` counted is decided (then ``failed`` or ``succeeded``)."""
        for key in self._keys(username, address):
            left = self._pending.pop(key) - 1
            if left:
                self._pending[key] = left

    def check(self, username: str, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        user_key, addr_key = self._keys(username, address)
        wait = max(
            self._wait(self._by_user, username.lower(), self._max_user, user_key, now),
            self._wait(self._by_addr, address, self._max_addr, addr_key, now),
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

    @staticmethod
    def _keys(username: str, address: str) -> tuple[str, str]:
        return f"u:{username.lower()}", f"a:{address}"

    def _wait(
        self, table: dict[str, deque[float]], key: str, limit: int, pending: str, now: float
    ) -> float:
        """Seconds until one more attempt may be checked; 0 when it may now."""
        times = table.get(key) or deque()
        while times and times[0] <= now - self._window:
            times.popleft()
        if not times:
            table.pop(key, None)
        if len(times) >= limit:
            return times[-limit] + self._window - now
        if len(times) + self._pending.get(pending, 0) >= limit:
            return 1.0  # attempts in progress may fail yet: ask again in a moment
        return 0.0

    def _sweep(self, now: float) -> None:
        for table in (self._by_user, self._by_addr):
            for key in [k for k, v in table.items() if not v or v[-1] <= now - self._window]:
                del table[key]
