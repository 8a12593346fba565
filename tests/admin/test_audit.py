"""The audit trail: what is recorded, paging, filters, the JSON-line logger, retention, and
that no secret, token or code ever lands in it."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from controller.app import create_app
from controller.audit import trail
from controller.audit.log import AUDIT
from controller.sessions.manager import SESSIONS
from controller.store.audit import AuditEntry, AuditRepo
from controller.store.db import DB
from tests.admin.conftest import audit_entries, audit_rows_text, create_user
from tests.conftest import bearer, login, make_settings
from tests.services.conftest import publish
from tests.sessions.conftest import new_session


@pytest.fixture
def settings(data_dir: Any) -> Any:
    return make_settings(data_dir, login_max_failures=2, service_pool_initial=0)


async def test_logins_ok_failed_and_throttled(client: TestClient[Any, Any]) -> None:
    await login(client)
    for _ in range(3):
        await client.post("/login", json={"username": "admin", "password": "wrong-password"})
    entries = await audit_entries(client, action="login")
    outcomes = [e.outcome for e in reversed(entries)]
    assert outcomes == ["ok", "failed", "failed", "throttled"]
    assert {e.actor for e in entries} == {"admin"} and {e.target for e in entries} == {"admin"}
    assert all(e.address for e in entries)


async def test_an_entry_carries_the_request_id_and_the_client_address(
    client: TestClient[Any, Any],
) -> None:
    headers = {"X-Request-Id": "audit-trail-check-1", "X-Forwarded-For": "203.0.113.9"}
    resp = await client.post(
        "/login", json={"username": "admin", "password": "wrong-password"}, headers=headers
    )
    assert resp.status == 401
    (entry,) = await audit_entries(client, action="login")
    assert entry.request_id == "audit-trail-check-1"
    assert entry.address == "127.0.0.1"  # the peer: no proxy is trusted by default


async def test_refresh_token_reuse_is_recorded(client: TestClient[Any, Any]) -> None:
    pair = await login(client)
    first = pair["refresh_token"]
    resp = await client.post("/login/refreshToken", json={"refreshToken": first})
    assert resp.status == 200
    resp = await client.post("/login/refreshToken", json={"refreshToken": first})  # replayed
    assert resp.status == 401
    entries = await audit_entries(client, action="token.reuse")
    assert [(e.actor, e.target, e.outcome) for e in entries] == [("admin", "admin", "revoked")]
    assert entries[0].address  # the replaying client's address


async def test_no_secret_token_or_code_in_the_trail(
    client: TestClient[Any, Any], admin_headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="o16n.audit")
    code = "answer = 42  # SECRET-CODE-MARKER"
    pair = await login(client)
    await create_user(client, admin_headers, "kim", password="kims-secret-password")
    await client.patch(
        "/admin/users/kim", json={"password": "kims-new-secret-pw"}, headers=admin_headers
    )
    resp = await client.post("/admin/users", json={"name": "lee"}, headers=admin_headers)
    generated = (await resp.json())["password"]
    await publish(client, admin_headers, "Secretive", "1", code=code, initCode="import os")
    await client.post("/login", json={"username": "kim", "password": "a-wrong-secret-pw"})
    resp = await client.post("/login/refreshToken", json={"refreshToken": pair["refresh_token"]})
    renewed = await resp.json()

    stored = await audit_rows_text(client)
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "o16n.audit")
    secrets = [
        "kims-secret-password",
        "kims-new-secret-pw",
        "a-wrong-secret-pw",
        generated,
        "SECRET-CODE-MARKER",
        "import os",
        pair["access_token"],
        pair["refresh_token"],
        renewed["refresh_token"],
        renewed["access_token"],
        admin_headers["Authorization"].split()[1],
    ]
    for secret in secrets:
        assert secret not in stored
        assert secret not in logged
    publish_entry = (await audit_entries(client, action="service.publish"))[0]
    assert publish_entry.target == "Secretive/1"
    assert publish_entry.detail["codeSha256"] == hashlib.sha256(code.encode()).hexdigest()
    change = (await audit_entries(client, action="user.change"))[0]
    assert change.detail == {"password": "set"}


async def test_the_same_events_go_out_as_json_lines(
    client: TestClient[Any, Any], admin_headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="o16n.audit")
    await create_user(client, admin_headers, "mia")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "o16n.audit"]
    created = [line for line in lines if line["action"] == "user.create"]
    assert len(created) == 1
    assert created[0]["actor"] == "admin" and created[0]["target"] == "mia"
    assert created[0]["outcome"] == "ok" and created[0]["time"].endswith("Z")
    stored = (await audit_entries(client, action="user.create"))[0]
    logged_at = datetime.fromisoformat(created[0]["time"].replace("Z", "+00:00")).timestamp()
    assert stored.at == pytest.approx(logged_at, abs=0.01)


async def test_paging_and_filters(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    for i in range(7):
        await create_user(client, admin_headers, f"page{i}")
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        url = "/admin/audit?action=user.create&limit=3" + (f"&cursor={cursor}" if cursor else "")
        resp = await client.get(url, headers=admin_headers)
        assert resp.status == 200
        page = await resp.json()
        seen += [e["id"] for e in page["entries"]]
        pages += 1
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 7 and seen == sorted(seen, reverse=True)

    resp = await client.get("/admin/audit?action=user.*&actor=admin", headers=admin_headers)
    entries = (await resp.json())["entries"]
    assert len(entries) == 7 and {e["target"] for e in entries} == {f"page{i}" for i in range(7)}
    resp = await client.get("/admin/audit?actor=nobody", headers=admin_headers)
    assert (await resp.json()) == {"entries": [], "nextCursor": None}

    future = "2999-01-01T00:00:00Z"
    resp = await client.get(f"/admin/audit?since={future}", headers=admin_headers)
    assert (await resp.json())["entries"] == []
    resp = await client.get(f"/admin/audit?until={future}&limit=1", headers=admin_headers)
    assert len((await resp.json())["entries"]) == 1


@pytest.mark.parametrize(
    ("query", "field"),
    [("limit=0", "limit"), ("limit=x", "limit"), ("cursor=zzz", "cursor"), ("since=soon", "since"),
     ("colour=red", "colour"),
     # a well-formed cursor whose id is beyond SQLite's 64-bit integers: forged, not a 500
     ("cursor=" + base64.urlsafe_b64encode(b"a1:" + b"9" * 30).decode().rstrip("="), "cursor")],
)  # fmt: skip
async def test_bad_query_names_the_parameter(
    client: TestClient[Any, Any], admin_headers: dict[str, str], query: str, field: str
) -> None:
    resp = await client.get(f"/admin/audit?{query}", headers=admin_headers)
    assert resp.status == 400
    assert field in (await resp.json())["message"]


async def test_retention_purges_old_entries(client: TestClient[Any, Any]) -> None:
    audit = client.app[AUDIT]
    old = AuditEntry(time.time() - 400 * 86400, "x", "", "old.event", "t", "ok")
    new = AuditEntry(time.time(), "x", "", "new.event", "t", "ok")
    await AuditRepo(client.app[DB]).append([old, new])
    assert await audit.purge() == 1  # default retention: 365 days
    assert [e.action for e in await audit_entries(client, actor="x")] == ["new.event"]


async def test_sessions_the_idle_reaper_closes_are_recorded(
    aiohttp_client: Any, data_dir: Any
) -> None:
    settings = make_settings(data_dir, session_idle_timeout=10)
    client = await aiohttp_client(create_app(settings))
    headers = bearer((await login(client))["access_token"])
    session_id = await new_session(client, headers)
    client.app[SESSIONS].find(session_id).last_used -= 60
    await client.app[SESSIONS].reap_idle()
    entries = await audit_entries(client, action="session.close")
    assert [(e.actor, e.target, e.detail) for e in entries] == [
        ("system", session_id, {"reason": "idle"})
    ]


async def test_a_publish_body_is_parsed_once(
    client: TestClient[Any, Any], admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trail's code digest reuses the body the handler parsed: a large publish body
    (a model) is not parsed a second time on the event loop."""
    parsed: list[str] = []  # what the trail parsed (its replies too: small)

    class CountingJson:
        @staticmethod
        def loads(raw: Any) -> Any:
            parsed.append(raw.decode() if isinstance(raw, bytes) else raw)
            return json.loads(raw)

    monkeypatch.setattr(trail, "json", CountingJson)
    await publish(client, admin_headers, "ParsedOnce", "1", code="x = 1")
    assert not [text for text in parsed if "x = 1" in text]
    entry = (await audit_entries(client, action="service.publish"))[0]
    assert entry.detail["codeSha256"] == hashlib.sha256(b"x = 1").hexdigest()


async def test_a_time_without_a_zone_is_utc(
    client: TestClient[Any, Any], admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries show UTC times; a ``since`` without a zone means UTC too, whatever the
    server's local zone."""
    monkeypatch.setenv("TZ", "Etc/GMT+5")  # five hours behind UTC
    time.tzset()
    try:
        await create_user(client, admin_headers, "zoe")
        hour_ago = datetime.fromtimestamp(time.time() - 3600, UTC).replace(tzinfo=None)
        resp = await client.get(
            f"/admin/audit?action=user.create&since={hour_ago.isoformat()}", headers=admin_headers
        )
        assert resp.status == 200
        assert [e["target"] for e in (await resp.json())["entries"]] == ["zoe"]
    finally:
        monkeypatch.undo()
        time.tzset()
