"""bench.nodes' pieces that need no server or node: counts per node, the longest gap
without a success, how a consume answer is counted, the image moves in the log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import nodes


def test_counts_over_are_what_a_phase_added_on_each_node() -> None:
    idle = {"local": 4, "ssh://a": 4, "ssh://b": 4}
    after = {"local": 14, "ssh://a": 13, "ssh://b": 15}
    assert nodes.counts_over(idle, after) == {"local": 10, "ssh://a": 9, "ssh://b": 11}


def test_the_longest_gap_counts_the_edges_of_the_load() -> None:
    assert nodes.longest_gap([1.0, 2.0, 6.5, 7.0], 0.0, 8.0) == pytest.approx(4.5)
    assert nodes.longest_gap([0.5, 1.0], 0.0, 10.0) == pytest.approx(9.0)  # none at the end
    assert nodes.longest_gap([], 2.0, 5.0) == pytest.approx(3.0)
    assert nodes.longest_gap([-1.0, 3.0, 99.0], 0.0, 4.0) == pytest.approx(3.0)  # outside


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (200, b'{"success": true, "outputParameters": {}}', "ok"),
        (200, b'{"success": false, "errorMessage": "lost"}', "success_false"),
        (200, b"not json", "success_false"),
        (503, b'{"message": "busy"}', "503"),
        (500, b"", "5xx"),
        (502, b"", "5xx"),
        (410, b"", "4xx"),
        (None, b"", "connection"),
    ],
)
def test_a_consume_answer_is_counted_by_its_kind(
    status: int | None, body: bytes, kind: str
) -> None:
    assert nodes.outcome(status, body) == kind


def test_image_moves_are_read_from_the_log_after_the_offset(tmp_path: Path) -> None:
    log = tmp_path / "o16n.log"
    move = {"msg": nodes.MOVED_LINE, "image": "x:1", "bytes": 10, "seconds": 0.5, "level": "info"}
    first = json.dumps({**move, "image": "before"}) + "\n"
    log.write_text(first + "not json\n" + json.dumps({"msg": "other"}) + "\n" + json.dumps(move))
    assert nodes.moved_lines(log, len(first)) == [{"image": "x:1", "bytes": 10, "seconds": 0.5}]
    assert [m["image"] for m in nodes.moved_lines(log, 0)] == ["before", "x:1"]


def test_docker_times_with_nanoseconds_are_read() -> None:
    assert nodes.parse_time("2026-12-02T14:21:10.123456789Z") == pytest.approx(
        1796221270.123456, abs=1e-5
    )
    assert nodes.parse_time("2026-12-02T14:21:10Z") == pytest.approx(1796221270.0)


def test_the_warm_pools_are_read_from_the_metrics() -> None:
    text = (
        "# HELP o16n_warm_pool_containers Pre-started containers ready\n"
        "# TYPE o16n_warm_pool_containers gauge\n"
        'o16n_warm_pool_containers{pool="sessions"} 5.0\n'
        'o16n_warm_pool_containers{pool="services"} 6.0\n'
        'o16n_warm_pool_target{pool="sessions"} 2.0\n'
        'o16n_warm_pool_target{pool="services"} 2.0\n'
        "o16n_warm_pool_containers_other 1.0\n"
    )
    ready, target = nodes.warm_pools(text)
    assert ready == {"sessions": 5, "services": 6}
    assert target == {"sessions": 2, "services": 2}


def test_tally_counts_each_kind() -> None:
    assert nodes.tally([200, 200, None, "ok"]) == {"200": 2, "None": 1, "ok": 1}
