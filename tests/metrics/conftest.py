"""``scrape``: ``GET /metrics`` of a test client, parsed, for any test that wants a metric;
``owner_client`` and ``publish_divider``, what the metrics tests start from."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from controller.app import create_app
from controller.settings import Settings
from tests.conftest import bearer, login
from tests.services.conftest import publish

#: The sample names a family of each type has (a counter ``o16n_logins`` is exposed as
#: ``o16n_logins_total``; the parser names the family without the suffix).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "gauge": ("",),
}


class Scrape:
    """The samples of one scrape: ``value(name, **labels)``, ``samples(name)``, and
    ``names``: every metric name a PromQL selector could name, a family with no sample
    yet included (a fresh app has consumed nothing, but its histogram is declared)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.all = [s for f in self.families.values() for s in f.samples]
        declared = {
            f.name + suffix
            for f in self.families.values()
            for suffix in SUFFIXES.get(f.type, ("",))
        }
        self.names = {s.name for s in self.all} | declared

    def samples(self, name: str, **labels: str) -> list[Sample]:
        """Every sample named ``name`` (``_total``, ``_bucket``… included) whose labels
        include ``labels``."""
        return [
            s
            for s in self.all
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the matching samples (0 when there are none)."""
        return sum(s.value for s in self.samples(name, **labels))


async def scrape(client: TestClient[Any, Any], headers: dict[str, str]) -> Scrape:
    """``GET /metrics`` with ``headers`` (an Owner's bearer, or the metrics token), parsed."""
    resp = await client.get("/metrics", headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "text/plain"
    return Scrape(await resp.text())


async def owner_client(
    aiohttp_client: Any, settings: Settings
) -> tuple[TestClient[Any, Any], dict[str, str]]:
    """A client of an app made with ``settings``, and the headers of its admin (an Owner)."""
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    return client, bearer((await login(client))["access_token"])


async def publish_divider(
    client: TestClient[Any, Any], headers: dict[str, str], name: str, version: str = "1"
) -> None:
    """Publish ``y = 10 / x``: a consume with ``x`` 0 is the service's code failing (the
    ``failure`` outcome), with any other integer a success."""
    await publish(
        client,
        headers,
        name,
        version,
        code="y = 10 / x",
        inputParameterDefinitions=[{"name": "x", "type": "integer"}],
        outputParameterDefinitions=[{"name": "y", "type": "numeric"}],
    )
