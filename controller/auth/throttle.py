"""Failed-login throttling that slows guessing without locking out the accounts' owners.

A single counter per user name let anyone lock an account's owner out, and one per address
let anyone lock out every user behind a shared address (a reverse proxy, a NAT). The rule
here is: **a refusal only ever applies where failures happened**. Failures are counted,
over a sliding ``window``, per (user name, address) pair, per address, per user name, and
per device (see below). An attempt for ``name`` from ``address`` is refused (429 with
``Retry-After``) when:

1. the pair has ``max_failures`` failures (guessing one account from one place), or
2. the pair has failed at least once, and the address has ``max_per_address`` failures
   (guessing many accounts from one place: past the cap, each name gets one guess), or
3. the pair has failed at least once, and the name has ``max_per_user`` failures from all
   addresses (guessing one account from many places: past the cap, one guess per address).

An IPv6 address counts as its /64 network (one host's share), an IPv4-mapped one as its
IPv4 address. A user who has not failed from an address is never refused there because of someone
else's failures. The one case that rule cannot tell apart, an attacker guessing ``admin``
from the address the real ``admin`` uses, is OWASP's device-cookie scheme: a successful
login sets a signed cookie naming the user (``AuthService``); an attempt that presents a
valid one for its user name is judged only by that device's own failures (``max_failures``)
and ignores the pair, address and user counters. Attempts still being checked count as
failures-in-waiting (``begin``/``end``), so concurrent guesses cannot all slip through.

Kept in memory: a restart forgets it. A lockout (a counter reaching its limit) is logged.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections import deque
from collections.abc import Hashable

from controller.errors import TooManyRequestsError

log = logging.getLogger(__name__)

_Table = dict[Hashable, deque[float]]
SWEEP_AT = 100_000


class LoginThrottle:
    """Sliding-window counters of failed logins; see the module's docstring for the rule."""

    def __init__(
        self, max_failures: int, max_per_address: int, window: float, max_per_user: int = 20
    ) -> None:
        self._max_pair = max_failures
        self._max_addr = max_per_address
        self._max_user = max_per_user
        self._window = window
        self._by_pair: _Table = {}
        self._by_addr: _Table = {}
        self._by_user: _Table = {}
        self._by_device: _Table = {}
        self._pending: dict[Hashable, int] = {}  # attempts being checked, by counter key
        self._sweep_at = SWEEP_AT  # counters kept before expired ones are swept

    def begin(self, username: str, address: str, device: str | None = None) -> None:
        """Before a password is checked: ``check``, then count the attempt as in progress
        until ``end``."""
        self.check(username, address, device=device)
        for key in self._keys(username, address, device):
            self._pending[key] = self._pending.get(key, 0) + 1

    def end(self, username: str, address: str, device: str | None = None) -> None:
        """The attempt ``begin`` counted is decided (then ``failed`` or ``succeeded``)."""
        for key in self._keys(username, address, device):
            left = self._pending.pop(key) - 1
            if left:
                self._pending[key] = left

    def check(
        self, username: str, address: str, now: float | None = None, device: str | None = None
    ) -> None:
        now = time.monotonic() if now is None else now
        name, address = username.lower(), _place(address)
        if device is not None:
            wait = self._wait(self._by_device, ("d", device), self._max_pair, now)
        else:
            pair = ("p", name, address)
            wait = self._wait(self._by_pair, pair, self._max_pair, now)
            if self._by_pair.get(pair) or self._pending.get(pair):
                wait = max(
                    wait,
                    self._wait(self._by_addr, ("a", address), self._max_addr, now),
                    self._wait(self._by_user, ("u", name), self._max_user, now),
                )
        if wait > 0:
            raise TooManyRequestsError(
                "too many failed logins; try again later", retry_after=math.ceil(wait)
            )

    def failed(
        self, username: str, address: str, now: float | None = None, device: str | None = None
    ) -> None:
        now = time.monotonic() if now is None else now
        name, place = username.lower(), _place(address)
        counters = [
            (self._by_pair, ("p", name, place), self._max_pair),
            (self._by_addr, ("a", place), self._max_addr),
            (self._by_user, ("u", name), self._max_user),
        ]
        if device is not None:
            counters.append((self._by_device, ("d", device), self._max_pair))
        for table, key, limit in counters:
            times = table.get(key)
            if times is None:  # only the last ``limit`` failures decide (``_wait``)
                times = table[key] = deque(maxlen=limit)
            while times and times[0] <= now - self._window:
                times.popleft()
            reached = len(times) == limit - 1  # a lockout starts: logged once
            times.append(now)
            if reached:
                log.warning(
                    "login lockout",
                    extra={
                        "scope": _SCOPES[key[0]],
                        "username": username[:256],
                        "address": address,
                        "failures": limit,
                        "window": self._window,
                    },
                )
        if sum(map(len, (self._by_pair, self._by_addr, self._by_user))) > self._sweep_at:
            self._sweep(now)

    def succeeded(self, username: str, address: str, device: str | None = None) -> None:
        name = username.lower()
        self._by_pair.pop(("p", name, _place(address)), None)
        self._by_user.pop(("u", name), None)
        if device is not None:
            self._by_device.pop(("d", device), None)

    @staticmethod
    def _keys(username: str, address: str, device: str | None) -> list[Hashable]:
        name, place = username.lower(), _place(address)
        keys: list[Hashable] = [("p", name, place), ("a", place), ("u", name)]
        if device is not None:
            keys.append(("d", device))
        return keys

    def _wait(self, table: _Table, key: Hashable, limit: int, now: float) -> float:
        """Seconds until one more attempt may be checked; 0 when it may now."""
        times = table.get(key) or deque()
        while times and times[0] <= now - self._window:
            times.popleft()
        if not times:
            table.pop(key, None)
        if len(times) >= limit:
            return times[-limit] + self._window - now
        if len(times) + self._pending.get(key, 0) >= limit:
            return 1.0  # attempts in progress may fail yet: ask again in a moment
        return 0.0

    def _sweep(self, now: float) -> None:
        for table in (self._by_pair, self._by_addr, self._by_user, self._by_device):
            for key in [k for k, v in table.items() if not v or v[-1] <= now - self._window]:
                del table[key]
        # still many (a flood within the window): the next sweep waits for twice as many,
        # so that a sweep is not run, over all of them, on every failure
        kept = sum(map(len, (self._by_pair, self._by_addr, self._by_user)))
        self._sweep_at = max(SWEEP_AT, 2 * kept)


def _place(address: str) -> str:
    """Where an attempt comes from, as counted: an IPv6 address's /64 (the least a host is
    given: counted one by one, its 2^64 addresses would each get fresh guesses), an
    IPv4-mapped one's IPv4 address, anything else as it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return address


_SCOPES = {"p": "user from address", "a": "address", "u": "user", "d": "device"}
