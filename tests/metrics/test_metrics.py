"""``GET /metrics`` on the engine of the run (the fake one unless Docker is asked for): who
may read it, route templates, outcomes, logins, sessions, the database, and the switch."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from controller.app import create_app
from controller.auth.roles import Identity
from controller.metrics.definitions import REGISTRY
from controller.metrics.live import LIVE
from controller.reserved_names import PREFIX
from controller.roles import Role
from controller.services.models import PublishWebServiceRequest
from controller.services.registry import SERVICES
from controller.settings import Settings, SettingsError
from tests.conftest import bearer, login, make_settings, user_headers
from tests.metrics.conftest import owner_client, publish_divider, scrape
from tests.services.conftest import consume, publish
from tests.sessions.conftest import execute, new_session

TOKEN = "metrics-" + secrets.token_urlsafe(16)


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return make_settings(data_dir, metrics_token=TOKEN)


async def _error(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    body: dict[str, Any] = await resp.json()
    assert set(body) >= {"message", "exceptionType"}
    return body


async def test_only_an_owner_or_the_metrics_token_reads_metrics(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    body = await _error(await client.get("/metrics"), 401)
    assert body["exceptionType"] == "UnauthorizedError"
    await _error(await client.get("/metrics", headers=bearer("x" * len(TOKEN))), 401)
    await _error(await client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"}), 401)
    reader = await user_headers(client, "metrics-reader", "Reader")
    body = await _error(await client.get("/metrics", headers=reader), 403)
    assert body["exceptionType"] == "ForbiddenError"
    contributor = await user_headers(client, "metrics-contributor", "Contributor")
    await _error(await client.get("/metrics", headers=contributor), 403)

    for headers in (admin_headers, bearer(TOKEN)):
        resp = await client.get("/metrics", headers=headers)
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"] == CONTENT_TYPE_LATEST
    found = await scrape(client, bearer(TOKEN))
    assert found.value("o16n_build_info") == 1
    # declared before anything happened, as a dashboard's queries name them
    assert {
        "o16n_consume_duration_seconds_bucket",
        "o16n_execute_duration_seconds_count",
        "o16n_logins_total",
        "o16n_container_deaths_total",
        "o16n_service_pool_containers",
        "o16n_service_pool_rejected_total",
        "o16n_batch_records",
    } <= found.names
    for family in ("process_cpu_seconds", "python_gc_objects_collected", "python_info"):
        assert family in found.families


def test_a_short_metrics_token_stops_the_start(data_dir: Path) -> None:
    with pytest.raises(SettingsError, match="O16N_METRICS_TOKEN"):
        Settings.from_env({"O16N_METRICS_TOKEN": "too-short"})


async def test_the_metrics_token_may_come_from_a_file(aiohttp_client: Any, data_dir: Path) -> None:
    path = data_dir / "metrics-token"
    path.write_text(TOKEN + "\n")
    client = await aiohttp_client(create_app(make_settings(data_dir, metrics_token_file=path)))
    await scrape(client, bearer(TOKEN))
    await _error(await client.get("/metrics", headers=bearer(TOKEN[:-1])), 401)

    path.write_text("short\n")
    with pytest.raises(SettingsError, match="O16N_METRICS_TOKEN_FILE"):
        create_app(make_settings(data_dir / "2", metrics_token_file=path))
    with pytest.raises(SettingsError, match="both set"):
        create_app(make_settings(data_dir / "3", metrics_token_file=path, metrics_token=TOKEN))


async def test_metrics_off_has_no_route_and_counts_nothing(
    aiohttp_client: Any, data_dir: Path
) -> None:
    client, headers = await owner_client(aiohttp_client, make_settings(data_dir, metrics=False))
    labels = {"route": "/metrics", "method": "GET", "code": "404"}
    before = REGISTRY.get_sample_value("o16n_http_request_duration_seconds_count", labels) or 0
    unmatched = {"route": "unmatched", "method": "GET", "code": "404"}
    unmatched_before = REGISTRY.get_sample_value(
        "o16n_http_request_duration_seconds_count", unmatched
    )
    await _error(await client.get("/metrics", headers=headers), 404)
    await _error(await client.get("/metrics", headers=bearer(TOKEN)), 404)
    assert (REGISTRY.get_sample_value("o16n_http_request_duration_seconds_count", labels) or 0) == (
        before
    )
    assert (
        REGISTRY.get_sample_value("o16n_http_request_duration_seconds_count", unmatched)
        == unmatched_before
    )


async def test_requests_are_labelled_by_route_template_never_by_path(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    session_id = secrets.token_hex(16)
    resp = await client.delete(f"/sessions/{session_id}", headers=admin_headers)
    assert resp.status == 404
    junk = "no-such-" + secrets.token_hex(8)
    assert (await client.get(f"/{junk}/{session_id}")).status == 404
    assert (await client.request("PROPFIND", f"/{junk}")).status in (404, 405)

    found = await scrape(client, admin_headers)
    assert found.samples(
        "o16n_http_request_duration_seconds_count", route="/sessions/{id}", method="DELETE"
    )
    assert found.samples("o16n_http_request_duration_seconds_count", route="unmatched", code="404")
    assert found.samples("o16n_http_request_duration_seconds_count", method="OTHER")
    assert session_id not in found.text and junk not in found.text
    routes = {s.labels["route"] for s in found.samples("o16n_http_request_duration_seconds_count")}
    assert all(r == "unmatched" or r.startswith("/") for r in routes), routes
    assert found.value("o16n_http_requests_in_flight") >= 1  # the scrape itself


async def test_execute_outcomes_and_session_states(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    before = await scrape(client, admin_headers)
    session_id = await new_session(client, admin_headers)
    assert (await execute(client, admin_headers, session_id, "x = 1"))["success"]
    assert not (await execute(client, admin_headers, session_id, "1 / 0"))["success"]
    resp = await client.post(
        f"/sessions/{secrets.token_hex(8)}/execute", json={"code": "1"}, headers=admin_headers
    )
    assert resp.status == 404

    after = await scrape(client, admin_headers)
    name = "o16n_execute_duration_seconds_count"
    for outcome, count in (("success", 1), ("failure", 1), ("client_error", 1)):
        grown = after.value(name, outcome=outcome) - before.value(name, outcome=outcome)
        assert grown == count, outcome
    assert after.value("o16n_sessions", state="idle") == 1
    assert after.value("o16n_container_starts_total", kind="session", outcome="ok") >= 1
    assert session_id not in after.text


async def test_a_warm_container_taken_for_a_session_ends_as_a_session_one(
    aiohttp_client: Any, data_dir: Path
) -> None:
    """Most session and service containers come from a warm pool: their end (an OOM kill,
    say) counts under the kind they served, not under ``warm``."""
    client, headers = await owner_client(aiohttp_client, make_settings(data_dir, warm_pool_size=1))
    for _ in range(300):
        before = await scrape(client, headers)
        if before.value("o16n_warm_pool_containers", pool="sessions") == 1:
            break
        await asyncio.sleep(0.05)
    session_id = await new_session(client, headers)
    resp = await client.delete(f"/sessions/{session_id}", headers=headers)
    assert resp.status == 200, await resp.text()

    starts, deaths = "o16n_container_starts_total", "o16n_container_deaths_total"
    for _ in range(300):  # the container goes after the answer
        after = await scrape(client, headers)
        if after.value(deaths, kind="session", reason="removed") > before.value(
            deaths, kind="session", reason="removed"
        ):
            break
        await asyncio.sleep(0.05)
    assert after.value(starts, kind="session") == before.value(starts, kind="session")  # warm
    assert (
        after.value(deaths, kind="session", reason="removed")
        - before.value(deaths, kind="session", reason="removed")
        == 1
    )
    assert after.value(deaths, kind="warm") == before.value(deaths, kind="warm")


async def test_logins_are_counted_by_source_and_outcome(
    aiohttp_client: Any, data_dir: Path
) -> None:
    settings = make_settings(data_dir, login_max_failures=2)
    client, headers = await owner_client(aiohttp_client, settings)
    before = await scrape(client, headers)
    await login(client)
    for _ in range(2):
        resp = await client.post("/login", json={"username": "admin", "password": "wrong"})
        assert resp.status == 401
    resp = await client.post("/login", json={"username": "admin", "password": "wrong"})
    assert resp.status == 429

    after = await scrape(client, headers)
    name = "o16n_logins_total"
    for outcome, count in (("success", 1), ("failure", 2), ("throttled", 1)):
        grown = after.value(name, source="local", outcome=outcome) - before.value(
            name, source="local", outcome=outcome
        )
        assert grown == count, outcome


async def test_no_user_name_id_or_token_is_a_label(aiohttp_client: Any, data_dir: Path) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir, metrics_token=TOKEN)))
    name = "user-" + secrets.token_hex(6)
    headers = await user_headers(client, name, "Owner")
    token = headers["Authorization"].split()[1]
    resp = await client.get("/sessions", headers=headers)
    assert resp.status == 200
    found = await scrape(client, headers)
    for secret in (name, token, TOKEN, token.split(".")[1]):
        assert secret not in found.text
    assert found.value("o16n_db_call_duration_seconds_count", operation="read") > 0
    assert found.value("o16n_db_call_duration_seconds_count", operation="transaction") > 0


async def test_consume_outcomes_and_pool_series_of_existing_services_only(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    """On the fake engine by default; ``test_metrics_docker`` runs a consume on Docker."""
    await publish_divider(client, admin_headers, "Metered")
    assert (await consume(client, admin_headers, "Metered", "1", {"x": 2}))["success"]
    assert not (await consume(client, admin_headers, "Metered", "1", {"x": 0}))["success"]
    await consume(client, admin_headers, "Metered", "1", {}, expect=400)
    ghost = "Ghost" + secrets.token_hex(4)
    await consume(client, admin_headers, ghost, "1", {"x": 1}, expect=404)

    found = await scrape(client, admin_headers)
    name = "o16n_consume_duration_seconds_count"
    labels = {"service": "Metered", "version": "1"}
    assert found.value(name, outcome="success", **labels) == 1
    assert found.value(name, outcome="failure", **labels) == 1
    assert found.value(name, outcome="client_error", **labels) == 1
    assert ghost not in found.text
    containers = "o16n_service_pool_containers"
    assert {s.labels["state"] for s in found.samples(containers, **labels)} == {
        "idle",
        "busy",
        "starting",
    }
    assert found.value(containers, **labels) >= 1
    assert found.samples("o16n_service_pool_queue_depth", **labels)
    assert found.value("o16n_service_pool_rejected_total", **labels) == 0

    resp = await client.delete("/services/Metered/1", headers=admin_headers)
    assert resp.status == 200, await resp.text()
    found = await scrape(client, admin_headers)
    assert not [s for s in found.all if s.labels.get("service") == "Metered"]


async def test_a_patched_version_keeps_its_pool_counters(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    """A PATCH of the code replaces the version's pool; its served and rejected counts are
    counters "since the version was published", so they carry over (as on a recycle)."""
    await publish(
        client,
        admin_headers,
        "Patched",
        "1",
        code="y = 1",
        outputParameterDefinitions=[{"name": "y", "type": "integer"}],
    )
    assert (await consume(client, admin_headers, "Patched", "1", {}))["success"]
    resp = await client.patch("/services/Patched/1", json={"code": "y = 2"}, headers=admin_headers)
    assert resp.status == 200, await resp.text()
    found = await scrape(client, admin_headers)
    assert found.value("o16n_service_pool_served_total", service="Patched", version="1") == 1


async def test_two_apps_in_one_process_each_have_their_own_live_series(
    aiohttp_client: Any, data_dir: Path
) -> None:
    first = await aiohttp_client(create_app(make_settings(data_dir / "a", metrics_token=TOKEN)))
    second = await aiohttp_client(create_app(make_settings(data_dir / "b", metrics_token=TOKEN)))
    await publish(first, bearer((await login(first))["access_token"]), "OnlyFirst", "1", code="y=1")
    assert (await scrape(first, bearer(TOKEN))).samples("o16n_service_pool_containers")
    assert not (await scrape(second, bearer(TOKEN))).samples("o16n_service_pool_containers")


async def test_a_diagnostics_temporary_service_has_no_series(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    """Diagnostics publishes under a fresh reserved name each run, through the registry
    (no HTTP); the API hides it, and so does /metrics (no series churned per run)."""
    name = f"{PREFIX}{secrets.token_hex(4)}"
    owner = Identity(1, "admin", Role.OWNER)
    await client.app[SERVICES].publish(
        owner,
        name,
        "1",
        PublishWebServiceRequest.model_validate({"runtimeType": "Python", "code": "y = 1"}),
    )
    found = await scrape(client, admin_headers)
    assert name not in found.text
    assert found.samples("o16n_warm_pool_target")  # the scrape did read the live objects


async def test_the_live_series_are_formatted_off_the_event_loop(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    """A scrape copies the pools on the loop and formats the text on a worker thread: the
    series of many services do not hold the loop, and no thread reads a pool the loop is
    changing."""
    threads: list[int] = []

    class Probe(Collector):
        def collect(self) -> Iterable[Metric]:
            threads.append(threading.get_ident())
            return []

    client.app[LIVE].registry.register(Probe())
    await publish(client, admin_headers, "Copied", "1", code="y = 1")
    found = await scrape(client, admin_headers)
    assert threads and threading.get_ident() not in threads
    assert found.samples("o16n_service_pool_containers", service="Copied", version="1")


async def test_a_refused_consume_is_rejected_and_batches_are_counted_by_state(
    aiohttp_client: Any, data_dir: Path
) -> None:
    settings = make_settings(data_dir, service_pool_max=1, service_queue_max=0)
    client, headers = await owner_client(aiohttp_client, settings)
    await publish(
        client,
        headers,
        "Slow",
        "1",
        code="import time\ntime.sleep(t)\ny = t",
        inputParameterDefinitions=[{"name": "t", "type": "numeric"}],
        outputParameterDefinitions=[{"name": "y", "type": "numeric"}],
    )
    for _ in range(300):  # no queue: consume only once its one container is warm
        pool = await (await client.get("/services/Slow/1/pool", headers=headers)).json()
        if pool[0]["ready"] == 1:
            break
        await asyncio.sleep(0.05)
    await consume(client, headers, "Slow", "1", {"t": 0})
    busy = asyncio.ensure_future(consume(client, headers, "Slow", "1", {"t": 1.0}))
    await asyncio.sleep(0.3)
    await consume(client, headers, "Slow", "1", {"t": 0}, expect=503)  # no queue: refused
    await busy

    resp = await client.post("/api/Slow/1/batch", json=[{"t": 0}, {"t": 0}], headers=headers)
    assert resp.status == 202, await resp.text()
    batch = (await resp.json())["batchExecutionId"]
    for _ in range(300):
        body = await (await client.get(f"/api/Slow/1/batch/{batch}", headers=headers)).json()
        if body["state"] == "Complete":
            break
        await asyncio.sleep(0.05)

    found = await scrape(client, headers)
    labels = {"service": "Slow", "version": "1"}
    assert found.value("o16n_consume_duration_seconds_count", outcome="rejected", **labels) == 1
    assert found.value("o16n_consume_duration_seconds_count", outcome="success", **labels) == 2
    assert found.value("o16n_service_pool_rejected_total", **labels) >= 1  # batch items too
    assert found.value("o16n_batch_records", state="Complete") == 1
    assert found.value("o16n_batch_records", state="Pending") == 0
    assert batch not in found.text
