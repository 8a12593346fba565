"""What bench/_wrk.py makes of wrk's summary."""

from __future__ import annotations

from bench._wrk import failures


def test_wrk_failures_count_an_answer_once_and_every_socket_error() -> None:
    errors = {"connect": 1, "read": 2, "write": 0, "status": 3, "timeout": 4}
    assert failures({"non200": 3, "bad_body": 5, "errors": errors}) == 1 + 2 + 4 + 3 + 5
    unchecked = {"non200": 0, "bad_body": 0, "errors": errors}  # the script did not count
    assert failures(unchecked) == 1 + 2 + 4 + 3
