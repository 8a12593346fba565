"""The Grafana dashboard in docs/ queries only what ``GET /metrics`` serves, as its type allows.

Every query of every panel and template variable is parsed as PromQL (after putting in
what Grafana would for its variables), and every metric it selects must be a series of a
family the running app exposes: a renamed metric breaks this test, not an operator's
dashboard on the night it is needed. Fake engine, no Docker.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
from aiohttp.test_utils import TestClient

from tests.metrics.conftest import scrape

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"

#: What Grafana puts in for its variables before the query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$instance": ".*", "$service": ".*"}


def _queries(node: Any) -> Iterator[str]:
    """Every PromQL text in the dashboard: panel targets and template variable queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            else:
                yield from _queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from _queries(item)


def _promql(query: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        query = query.replace(variable, value)
    assert "$" not in query, f"a Grafana variable this test does not know: {query}"
    label_values = re.fullmatch(r"label_values\((\w+),\s*\w+\)", query)
    return label_values.group(1) if label_values else query


def _selected(query: str) -> set[str]:
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(_promql(query)), visit)
    return names


def dashboard_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = list(_queries(dashboard))
    assert len(queries) > 20
    return set().union(*(_selected(query) for query in queries))


def test_every_query_is_promql_and_selects_by_name() -> None:
    names = dashboard_metrics()
    assert {"o16n_consume_duration_seconds_bucket", "process_resident_memory_bytes"} <= names


async def test_every_metric_the_dashboard_queries_is_served(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    served = (await scrape(client, admin_headers)).names
    missing = sorted(dashboard_metrics() - served)
    assert not missing, f"the dashboard queries metrics /metrics does not serve: {missing}"


def test_what_the_dashboard_says_is_there() -> None:
    """The files its description points to exist, and a panel of an ``_info`` metric (whose
    value is always 1) shows the labels, not the 1."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    root = DASHBOARD.parents[1]
    for path in re.findall(r"[\w/-]+\.md", dashboard["description"]):
        assert (root / path).is_file(), path
    info = [p for p in dashboard["panels"] if "_info{" in json.dumps(p.get("targets", []))]
    assert info
    for panel in info:
        assert panel["type"] != "stat" or panel["options"]["textMode"] == "name", panel["title"]


def _selectors(node: Any) -> set[str]:
    names: set[str] = set()

    def visit(inner: Any) -> None:
        if isinstance(inner, promql_parser.VectorSelector) and inner.name:
            names.add(inner.name)

    promql_parser.walk(node, visit)
    return names


async def test_each_query_suits_its_metrics_type(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    """rate() only over counters and a histogram's series; a gauge never rated; every
    histogram_quantile() over buckets summed by ``le``."""
    families = (await scrape(client, admin_headers)).families
    counted = {
        name + suffix
        for name, f in families.items()
        if f.type in ("counter", "histogram")
        for suffix in ("_total", "_bucket", "_count", "_sum")
    }
    problems: list[str] = []

    def visit(node: Any) -> None:
        if not isinstance(node, promql_parser.Call):
            return
        name = node.func.name
        if name in ("rate", "irate", "increase"):
            for metric in _selectors(node) - counted:
                problems.append(f"{name}() of {metric}, not a counter")
        elif name == "histogram_quantile":
            inner = node.args[1]
            labels = inner.modifier.labels if getattr(inner, "modifier", None) else []
            if "le" not in labels or not all(m.endswith("_bucket") for m in _selectors(inner)):
                problems.append(f"histogram_quantile() not over buckets by le: {inner}")

    for query in _queries(json.loads(DASHBOARD.read_text(encoding="utf-8"))):
        tree = promql_parser.parse(_promql(query))
        promql_parser.walk(tree, visit)
    assert not problems, problems
