"""bench.webnodes' report, which needs no server: the ratios, and a failover that did not
come back said as such rather than as a time."""

from __future__ import annotations

from typing import Any

from bench import webnodes


def figures(session_s: float | None) -> dict[str, Any]:
    def store(create: float, consume: float) -> dict[str, Any]:
        return {"session_create": {"p50_ms": create}, "consume": {"p50_ms": consume}}

    def mode(rps: float) -> dict[str, Any]:
        return {"rps": rps, "p50_ms": 16000 / rps, "p99_ms": 32000 / rps}

    return {
        "store": {"postgres": store(15.0, 3.0), "sqlite": store(10.0, 2.0)},
        "throughput": {"two": mode(400.0), "one": mode(500.0)},
        "failover": {
            "lease_seconds": 3,
            "down_s": 1.2,
            "session_s": session_s,
            "answers_while_waiting": {"503": 12},
        },
    }


def test_the_report_gives_each_ratio_and_the_failover_against_its_bound() -> None:
    args = webnodes.parse_args([])
    text = webnodes.summarise(figures(3.7), args)
    assert "session create                             15.00       10.00       1.50" in text
    assert "consumes/s                                 400.0       500.0       0.80" in text
    assert "marks it down in 1.20 s, the session answers with x = 42 in 3.70 s" in text
    assert text.endswith("PASS  failover within lease + 5 s")
    assert webnodes.summarise(figures(8.5), args).endswith("MISS  failover within lease + 5 s")


def test_a_session_that_never_came_back_is_reported_with_what_the_proxy_answered() -> None:
    text = webnodes.summarise(figures(None), webnodes.parse_args(["--failover-limit", "20"]))
    assert "x = 42 in - (not within 20.0 s: {'503': 12})" in text
    assert "PASS" not in text and "MISS" not in text
