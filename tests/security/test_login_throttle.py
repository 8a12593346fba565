"""Failed logins slow guessing, per account and per address, without locking out a user
who has not failed there; X-Forwarded-For counts only from a trusted proxy."""

from __future__ import annotations

import logging
import secrets
import tracemalloc
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from controller.app import create_app
from controller.auth.routes import _device_cookie_name
from controller.auth.throttle import LoginThrottle
from controller.errors import TooManyRequestsError
from controller.http.client_address import client_address
from controller.settings import parse_networks
from tests.conftest import ADMIN_PASSWORD, login, make_settings, user_headers


async def _post_login(
    session: aiohttp.ClientSession,
    client: TestClient[Any, Any],
    username: str,
    password: str,
    forwarded_for: str | None = None,
) -> int:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    async with session.post(
        client.make_url("/login"),
        json={"username": username, "password": password},
        headers=headers,
    ) as resp:
        await resp.read()
        return resp.status


async def test_others_failures_do_not_lock_out_users_at_a_shared_address(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    await login(client)  # the real admin logged in before: its client holds a device cookie
    await user_headers(client, "alice", password="alice-password")
    caplog.set_level(logging.WARNING, "controller.auth.throttle")
    # An anonymous attacker at the same address (no cookies): random names, then 'admin'.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as attacker:
        for _ in range(30):
            name = "user-" + secrets.token_hex(4)
            assert await _post_login(attacker, client, name, "guess-guess") == 401
        # guessing one account stays throttled: past the address cap, one guess per name
        statuses = [await _post_login(attacker, client, "admin", f"g-{i}") for i in range(10)]
        assert statuses == [401] + [429] * 9, statuses
        alice = [await _post_login(attacker, client, "alice", f"g-{i}") for i in range(3)]
        assert alice == [401, 429, 429]
        # a user who has not failed here logs in, cookie or not
        await user_headers(client, "bob", password="bob-password")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as fresh:
        assert await _post_login(fresh, client, "bob", "bob-password") == 200
    # the real admin, with its device cookie, is not locked out by the attacker
    assert (await login(client))["access_token"]
    assert any(r.getMessage() == "login lockout" for r in caplog.records)


async def test_a_device_cookie_is_throttled_on_its_own_failures(
    client: TestClient[Any, Any],
) -> None:
    await login(client)
    for _ in range(5):
        resp = await client.post("/login", json={"username": "admin", "password": "wrong-wrong"})
        assert resp.status == 401
    resp = await client.post("/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert resp.status == 429


async def test_forwarded_for_counts_only_from_a_trusted_proxy(
    aiohttp_client: Any, data_dir: Any
) -> None:
    trusted = await aiohttp_client(
        create_app(make_settings(data_dir / "a", trusted_proxies="127.0.0.0/8"))
    )
    untrusted = await aiohttp_client(
        create_app(make_settings(data_dir / "b", trusted_proxies="192.0.2.0/24"))
    )
    for client, other_address_may_log_in in ((trusted, True), (untrusted, False)):
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s:
            for i in range(5):
                assert await _post_login(s, client, "admin", f"g-{i}", "10.0.0.1") == 401
            assert await _post_login(s, client, "admin", ADMIN_PASSWORD, "10.0.0.1") == 429
            status = await _post_login(s, client, "admin", ADMIN_PASSWORD, "10.0.0.2")
            assert status == (200 if other_address_may_log_in else 429)


def test_client_address_takes_the_rightmost_untrusted_hop() -> None:
    proxies = parse_networks("10.0.0.0/8, 2001:db8::/32")
    assert client_address("10.1.1.1", "1.1.1.1, 2.2.2.2, 10.9.9.9", proxies) == "2.2.2.2"
    assert client_address("10.1.1.1", "10.2.2.2", proxies) == "10.2.2.2"  # all trusted
    assert client_address("10.1.1.1", "junk, 3.3.3.3", proxies) == "3.3.3.3"
    assert client_address("10.1.1.1", "3.3.3.3, junk", proxies) == "10.1.1.1"
    assert client_address("8.8.8.8", "1.1.1.1", proxies) == "8.8.8.8"  # not a proxy
    assert client_address("10.1.1.1", None, proxies) == "10.1.1.1"
    assert client_address("10.1.1.1", "1.1.1.1", ()) == "10.1.1.1"
    with pytest.raises(ValueError, match="nonsense"):
        parse_networks("10.0.0.0/8, nonsense")


def test_throttle_rules() -> None:
    throttle = LoginThrottle(max_failures=3, max_per_address=5, window=60, max_per_user=4)
    for t in range(3):
        throttle.failed("Alice", "a1", now=t)
    with pytest.raises(TooManyRequestsError) as info:
        throttle.check("alice", "a1", now=10)  # names compare case-insensitively
    assert info.value.retry_after == 50
    throttle.check("alice", "a2", now=10)  # another address has not failed for alice
    throttle.check("alice", "a1", now=60.5)  # the first failure left the window
    # the address cap: names that failed there are refused, others are not
    throttle = LoginThrottle(max_failures=3, max_per_address=5, window=60, max_per_user=99)
    for name in "abcde":
        throttle.failed(name, "x", now=0)
    with pytest.raises(TooManyRequestsError):
        throttle.check("a", "x", now=1)
    throttle.check("f", "x", now=1)
    # the per-user cap: addresses that failed for the user are refused, others are not
    throttle = LoginThrottle(max_failures=3, max_per_address=99, window=60, max_per_user=4)
    for address in ("p", "q", "r", "s"):
        throttle.failed("bob", address, now=0)
    with pytest.raises(TooManyRequestsError):
        throttle.check("bob", "p", now=1)
    throttle.check("bob", "t", now=1)
    # a valid device is judged on its own failures only
    throttle.check("bob", "p", now=1, device="dev1")
    for t in range(3):
        throttle.failed("bob", "p", now=2 + t, device="dev1")
    with pytest.raises(TooManyRequestsError):
        throttle.check("bob", "p", now=6, device="dev1")
    throttle.succeeded("bob", "t")


async def test_a_device_cookie_that_is_not_ascii_is_ignored(client: TestClient[Any, Any]) -> None:
    """The cookie is the client's: a forged one with non-ASCII characters is no device, not
    a 500 (``hmac.compare_digest`` refuses non-ASCII strings)."""
    name = _device_cookie_name("admin")
    for value in ("é.é", "abc.é", "é.0123"):
        resp = await client.post(
            "/login",
            json={"username": "admin", "password": ADMIN_PASSWORD},
            headers={"Cookie": f"{name}={value}"},
        )
        assert resp.status == 200, await resp.text()


def test_throttle_memory_does_not_grow_with_failures_of_one_counter() -> None:
    """A flood of failures from one address (or for one name, or one pair) costs a bounded
    amount of memory: only the last ``limit`` failures of a counter decide anything."""
    throttle = LoginThrottle(max_failures=5, max_per_address=30, window=300.0)
    for i in range(50):  # every counter exists and is full
        throttle.failed("admin", "10.0.0.1", now=float(i))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(20_000):
            throttle.failed("admin", "10.0.0.1", now=50.0 + i / 1000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 16_384, grown


def test_an_ipv6_host_cannot_guess_from_every_address_of_its_network() -> None:
    """Every host of an IPv6 network holds at least a /64 (2^64 addresses): counted one by
    one, each new address would be a place that never failed, with a guess of its own. A
    /64 is one address for the throttle; an IPv4-mapped IPv6 address is its IPv4 one."""
    throttle = LoginThrottle(max_failures=3, max_per_address=99, window=60, max_per_user=99)
    for i in range(3):
        throttle.failed("admin", f"2001:db8:0:1::{i + 1:x}", now=i)
    with pytest.raises(TooManyRequestsError):
        throttle.check("admin", "2001:db8:0:1:ffff::9", now=5)
    throttle.check("admin", "2001:db8:0:2::1", now=5)  # another network has not failed
    for i in range(3):
        throttle.failed("admin", "::ffff:192.0.2.7", now=i)
    with pytest.raises(TooManyRequestsError):
        throttle.check("admin", "192.0.2.7", now=5)


async def test_a_forged_forwarded_for_line_before_the_proxys_is_not_believed(
    aiohttp_client: Any, data_dir: Any
) -> None:
    """A proxy may add its own ``X-Forwarded-For`` line after the client's (HAProxy does):
    the lines are one list, so the client's forged first line is not the address."""
    client = await aiohttp_client(
        create_app(make_settings(data_dir, trusted_proxies="127.0.0.0/8"))
    )
    statuses = []
    for i in range(6):
        resp = await client.post(
            "/login",
            json={"username": "admin", "password": f"g-{i}"},
            headers=[("X-Forwarded-For", f"198.51.100.{i}"), ("X-Forwarded-For", "10.0.0.1")],
        )
        statuses.append(resp.status)
    assert statuses == [401] * 5 + [429], statuses
