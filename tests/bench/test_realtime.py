"""bench.realtime's pieces that need no server: the form it publishes with, the order of the
runs, how answers are compared with the model's, and the report."""

from __future__ import annotations

import email.parser
import email.policy
from typing import Any

import pytest

from bench import realtime


def test_the_form_is_the_sdks_with_the_blob_prefix() -> None:
    body, content_type = realtime.multipart(b"\x80\x04pickle", "a model")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    parts = {p.get_param("name", header="content-disposition"): p for p in message.iter_parts()}
    assert parts["description"].get_content() == "a model"
    model = parts["model"]
    assert model.get_filename() == "model"
    assert model.get_content() == b"blob\x80\x04pickle"


def test_the_runs_interleave_and_alternate_the_first_service() -> None:
    plan = realtime.schedule(2)
    assert len(plan) == 2 * len(realtime.LOADS) * 2
    firsts = [plan[i][2] for i in range(0, len(plan), 2)]
    assert firsts == ["realtime", "python"] * len(realtime.LOADS)
    for name in realtime.NAMES:
        for key, _, _ in realtime.LOADS:
            assert sum(1 for _, k, n in plan if (k, n) == (key, name)) == 2


def test_the_frame_has_the_rows_asked_for_wrapping_around() -> None:
    data = {c: [float(i) for i in range(150)] for c in realtime.FEATURES}
    body = realtime.frame(data, [0, 149, 150, 151])
    assert body["inputData"]["petal_width"] == [0.0, 149.0, 0.0, 1.0]


def test_answers_are_compared_with_the_models_predictions() -> None:
    expected = {"label": [0, 1], "proba": [[0.9, 0.1], [0.2, 0.8]]}
    out = {"label": [0, 1], "probabilities_0": [0.9, 0.2000001], "probabilities_1": [0.1, 0.8]}
    found = realtime.agreement({"outputParameters": {"outputData": out}}, expected)
    assert found["labels_equal"] and found["max_probability_diff"] == pytest.approx(1e-7)
    out["label"] = [0, 0]
    assert not realtime.agreement({"outputParameters": {"outputData": out}}, expected)[
        "labels_equal"
    ]
    del out["probabilities_1"]
    missing = realtime.agreement({"outputParameters": {"outputData": out}}, expected)
    assert missing["max_probability_diff"] == float("inf")


def run(rps: float, p50_us: float, failures: int = 0) -> dict[str, Any]:
    return {
        "rps": rps,
        "p50_us": p50_us,
        "p90_us": p50_us * 1.5,
        "requests": 100,
        "failures": failures,
    }


def figures(rt_speed: float) -> dict[str, Any]:
    """Figures as a run leaves them; the realtime service ``rt_speed`` times as fast."""

    def service(speed: float, failures: int = 0) -> dict[str, Any]:
        found = {
            key: realtime.median_of([run(1000 * speed, 2000 / speed, failures)] * 2)
            for key, _, _ in realtime.LOADS
        }
        found["bulk"] = {"rows": 10_000, "p50_s": 0.5 / speed, "rows_per_s": 20_000 * speed}
        return found

    machine = {"load_1min": 0.5, "other_containers": 0}
    return {
        "model": "logistic",
        "pickle_bytes": 2000,
        "machine_at_start": machine,
        "machine_at_end": machine,
        "image": {"tag": "o16n-runtime:x", "bytes": 773_307_996, "before_bytes": 619_831_858},
        "published": {"realtime": {"first_consume_s": 3.0}, "python": {"first_consume_s": 2.0}},
        "agreement": {
            name: {"labels_equal": True, "max_probability_diff": 1e-7, "columns": ["label"]}
            for name in realtime.NAMES
        },
        "realtime": service(rt_speed),
        "python": service(1.0, failures=1),
    }


def test_the_report_gives_the_ratios_and_the_targets() -> None:
    found = figures(2.0)
    text = realtime.summarise(found, realtime.parse_args([]))
    assert found["ratios"]["p50_r1_c1"] == pytest.approx(0.5)
    assert found["ratios"]["rps_r10_cN"] == pytest.approx(2.0)
    assert found["ratios"]["bulk_rows_rps"] == pytest.approx(2.0)
    assert "c=16, 1 row, requests/s" in text and "10,000 rows, rows/s" in text
    assert "773,307,996 bytes" in text and "+153,476,138" in text
    assert "failed requests: realtime 0, Python 8" in text
    assert all(t["pass"] for t in found["targets"]), found["targets"]
    assert "PASS  p50 at c=1, 1 row(s) <= 0.7 x Python: 0.500" in text


def test_a_slow_realtime_service_misses() -> None:
    found = figures(1.1)
    text = realtime.summarise(found, realtime.parse_args(["--connections", "8"]))
    assert "MISS  requests/s at c=8, 10 row(s) >= 1.3 x Python: 1.100" in text
    assert "MISS  p50 at c=1, 10 row(s) <= 0.7 x Python" in text


def test_options_are_checked() -> None:
    assert realtime.parse_args([]).model == "logistic"
    with pytest.raises(SystemExit):
        realtime.parse_args(["--bulk-rows", "5"])
    with pytest.raises(SystemExit):
        realtime.parse_args(["--model", "svm"])
