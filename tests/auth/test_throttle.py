from __future__ import annotations

import pytest

from controller.auth.throttle import LoginThrottle
from controller.errors import TooManyRequestsError


def test_user_limit_window_and_retry_after() -> None:
    throttle = LoginThrottle(max_failures=3, max_per_address=100, window=60)
    for t in (0.0, 1.0, 2.0):
        throttle.check("Alice", "1.2.3.4", now=t)
        throttle.failed("Alice", "1.2.3.4", now=t)
    with pytest.raises(TooManyRequestsError) as info:
        throttle.check("alice", "1.2.3.4", now=10.0)  # user names compare case-insensitively
    assert info.value.retry_after == 50
    throttle.check("bob", "1.2.3.4", now=10.0)
    throttle.check("alice", "5.6.7.8", now=10.0)  # no failures of alice from there
    throttle.check("alice", "1.2.3.4", now=60.5)  # the first failure left the window


def test_address_limit_and_success_reset() -> None:
    throttle = LoginThrottle(max_failures=100, max_per_address=2, window=60)
    throttle.failed("a", "9.9.9.9", now=0)
    throttle.failed("b", "9.9.9.9", now=0)
    with pytest.raises(TooManyRequestsError):
        throttle.check("a", "9.9.9.9", now=1)
    throttle.check("c", "9.9.9.9", now=1)  # c has not failed there
    throttle = LoginThrottle(max_failures=2, max_per_address=100, window=60)
    throttle.failed("a", "x", now=0)
    throttle.succeeded("a", "x")
    throttle.failed("a", "x", now=1)
    throttle.check("a", "x", now=2)


def test_attempts_in_progress_count() -> None:
    """Concurrent guesses cannot all pass before the first failure is recorded."""
    throttle = LoginThrottle(max_failures=2, max_per_address=100, window=60)
    throttle.begin("a", "x")
    throttle.begin("a", "x")
    with pytest.raises(TooManyRequestsError) as info:
        throttle.begin("a", "x")
    assert info.value.retry_after == 1  # the two in progress may still succeed
    throttle.end("a", "x")
    throttle.succeeded("a", "x")
    throttle.begin("a", "x")  # one in progress, no failure: room again
    throttle.end("a", "x")
    throttle.end("a", "x")
    throttle.check("a", "x")
