"""bench.consume's pieces that need no server: the options' defaults, the order of the runs,
the medians of the rounds and the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import consume


def test_by_default_the_server_keeps_its_own_pool_sizes() -> None:
    args = consume.parse_args([])
    assert consume.pool_settings(args) == {}
    assert (args.rounds, args.framework_rounds, args.no_frameworks) == (3, 1, False)
    asked = consume.parse_args(["--pool-initial", "2", "--pool-max", "3"])
    assert consume.pool_settings(asked) == {
        "O16N_SERVICE_POOL_INITIAL": "2",
        "O16N_SERVICE_POOL_MAX": "3",
    }


def test_a_pool_max_below_the_initial_size_is_refused() -> None:
    with pytest.raises(SystemExit):
        consume.parse_args(["--pool-initial", "3", "--pool-max", "2"])


def test_the_rounds_interleave_and_rotate_the_first_server() -> None:
    names = ["o16n", "baseline", "mlflow", "bentoml"]
    plan = consume.schedule(3, 1, names, 16)
    assert plan[:8] == [
        (0, "c1", 1, "o16n"),
        (0, "c1", 1, "baseline"),
        (0, "c1", 1, "mlflow"),
        (0, "c1", 1, "bentoml"),
        (0, "cN", 16, "baseline"),
        (0, "cN", 16, "mlflow"),
        (0, "cN", 16, "bentoml"),
        (0, "cN", 16, "o16n"),
    ]
    later = [(r, k, name) for r, k, _, name in plan[8:]]
    assert later == [  # A B, B A: each goes first as often as the other
        (1, "c1", "baseline"),
        (1, "c1", "o16n"),
        (1, "cN", "o16n"),
        (1, "cN", "baseline"),
        (2, "c1", "o16n"),
        (2, "c1", "baseline"),
        (2, "cN", "baseline"),
        (2, "cN", "o16n"),
    ]
    for name in names[:2]:
        assert sum(1 for run in plan if run[3] == name) == 6
    assert len(consume.schedule(2, 5, names, 16)) == 16  # at most every round


def run(rps: float, p50: float, cpu_s: float = 0.1, requests: int = 1000, **more: Any) -> Any:
    return {
        "rps": rps,
        "p50_us": p50,
        "p90_us": p50 * 2,
        "p99_us": p50 * 4,
        "requests": requests,
        "failures": more.pop("failures", 0),
        "server_cpu_s": cpu_s,
        "server_cpu_us_per_request": cpu_s / requests * 1e6,
        **more,
    }


def test_the_median_of_the_rounds_is_taken_figure_by_figure() -> None:
    rounds = [run(100, 900), run(300, 500, failures=2), run(200, 700, cpu_s=0.3)]
    summary = consume.median_of(rounds)
    assert (summary["rps"], summary["p50_us"], summary["rounds"]) == (200, 700, 3)
    assert summary["requests"] == 3000 and summary["failures"] == 2
    assert summary["server_cpu_s"] == pytest.approx(0.5)
    assert "containers_cpu_us_per_request" not in summary  # no round had it
    assert summary["runs"] == rounds


def figures(frameworks_run: bool) -> dict[str, Any]:
    machine = {"load_1min": 0.5, "other_containers": 0}
    pool = {"initialPoolSize": 1, "maxPoolSize": 4, "ready": 4, "busy": 0, "queued": 0}

    def server(rps: float, p50: float, cpu_s: float) -> dict[str, Any]:
        rounds = [run(rps, p50, cpu_s), run(rps, p50, cpu_s)]
        return {"run": True, "c1": consume.median_of(rounds), "cN": consume.median_of(rounds)}

    found: dict[str, Any] = {
        "machine_at_start": machine,
        "machine_at_end": machine,
        "predict_in_process": {"predict_median_us": 60.0, "service_code_median_us": 62.0},
        "pool_settings": {},
        "setup": {"create_session_s": 0.1},
        "publish_first_consume": {
            "p50_s": 0.7,
            "max_s": 0.8,
            "samples": [
                {"version": "V1.0", "first_consume_s": 0.7, "idle_before_s": 1.0},
                {"version": "V1.1", "first_consume_s": 0.8, "idle_before_s": None},
            ],
        },
        "pool_at_start": pool,
        "pool_before_runs": {**pool, "full": True},
        "pool_after": pool,
        "o16n": server(1600, 900, 0.1),  # 100 µs per consume
        "baseline": server(1000, 1000, 0.2),
        "frameworks": {"run": frameworks_run, "why": None if frameworks_run else "no venv"},
    }
    if frameworks_run:
        found["frameworks"] |= {"versions": {"mlflow": "3", "bentoml": "1"}, "rounds": 1}
        found["mlflow"] = server(150, 5000, 0.5)
        found["bentoml"] = server(120, 6000, 0.6)
    return found


def test_the_report_has_the_issues_table_and_targets(tmp_path: Path) -> None:
    found = figures(frameworks_run=True)
    text = consume.summarise(found, consume.parse_args([]))
    assert "the server's defaults (pool 1/4" in text
    header = text.splitlines()[1]
    assert header.split() == ["o16n", "in-process", "MLflow", "BentoML"]
    assert "c=16, requests/s" in text and "1,600 (1.60x)" in text and "150 (0.15x)" in text
    assert found["ratios"]["rps_cN"] == pytest.approx(1.6)
    assert found["mlflow"]["ratios"]["rps_c1"] == pytest.approx(0.15)
    assert found["absolute"]["controller_cpu_us_per_consume"] == pytest.approx(100)
    verdicts = {t["target"]: t["pass"] for t in found["targets"]}
    assert verdicts == {
        "requests/s at c=16 >= 1.5 x in-process": True,
        "requests/s at c=1 >= 0.85 x in-process": True,
        "p50 at c=1 <= 1.15 x in-process": True,
        "controller CPU per consume <= 150 µs": True,
        "no failed requests (o16n, every run)": True,
        "publish → first consume <= 2 s, every sample": True,
    }
    assert "PASS  requests/s at c=16 >= 1.5 x in-process: 1.600" in text
    assert "(except before V1.1: not idle within 60 s)" in text


def test_without_the_frameworks_the_report_says_how_to_get_them() -> None:
    found = figures(frameworks_run=False)
    found["o16n"]["cN"]["failures"] = 3
    text = consume.summarise(found, consume.parse_args([]))
    assert "make bench-baselines" in text and "MLflow" in text
    assert found["mlflow"] == {"run": False, "why": "no venv"}
    assert found["bentoml"] == {"run": False, "why": "no venv"}
    assert "MISS  no failed requests (o16n, every run): 3" in text
