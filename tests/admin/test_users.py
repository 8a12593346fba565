"""``/admin/users``: accounts, roles, logins, transfer and delete; the Owner-only guard."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from controller import __main__ as cli
from controller.admin import console
from controller.admin import routes as admin_routes
from controller.auth.service import AUTH
from controller.errors import ConflictError
from controller.roles import Role
from controller.sessions.manager import SESSIONS
from controller.settings import Settings
from controller.store.audit import AuditQuery, AuditRepo
from controller.store.db import DB, Database, open_database
from controller.store.users import UsersRepo
from tests.admin.conftest import audit_entries, create_user
from tests.conftest import bearer, database_env, login, user_headers
from tests.services.conftest import publish
from tests.sessions.conftest import new_session


def _admin_operations() -> list[tuple[str, str]]:
    """Every /admin API operation (the console's static files are public: tested apart)."""
    ops = []
    for route in admin_routes.routes:
        if route.path in console.PATHS:  # type: ignore[attr-defined]
            continue
        path = re.sub(r"\{(\w+)\}", "x", route.path)  # type: ignore[attr-defined]
        ops.append((route.method, path))  # type: ignore[attr-defined]
    return ops


async def test_every_admin_endpoint_is_for_owners_only(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    contributor = await user_headers(client, "carol", "Contributor")
    reader = await user_headers(client, "rita", "Reader")
    ops = _admin_operations()
    assert ("GET", "/admin/users") in ops and ("GET", "/admin/audit") in ops
    for method, path in ops:
        resp = await client.request(method, path, json={})
        assert resp.status == 401, (method, path)
        for headers in (contributor, reader):
            resp = await client.request(method, path, json={}, headers=headers)
            assert resp.status == 403, (method, path, await resp.text())
            body = await resp.json()
            assert body["exceptionType"] == "ForbiddenError"
            assert "Owner" in body["message"]
    # a denied change is in the audit trail too
    denied = await audit_entries(client, action="user.create")
    assert {e.actor for e in denied} == {"carol", "rita"}
    assert {e.outcome for e in denied} == {"denied"}


async def test_create_list_and_get_users(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    made = await create_user(client, admin_headers, "dora", "Reader")
    assert made["role"] == "Reader" and made["source"] == "local" and "password" not in made
    assert made["lastLogin"] is None and made["disabled"] is False

    resp = await client.post("/admin/users", json={"name": "gen"}, headers=admin_headers)
    assert resp.status == 201
    generated = await resp.json()
    assert generated["role"] == "Contributor" and len(generated["password"]) >= 20
    token = (await login(client, "gen", generated["password"]))["access_token"]
    await new_session(client, bearer(token))

    resp = await client.get("/admin/users/gen", headers=admin_headers)
    body = await resp.json()
    assert "password" not in body
    assert body["lastLogin"] is not None and body["sessions"] == 1

    resp = await client.get("/admin/users", headers=admin_headers)
    users = {u["name"]: u for u in await resp.json()}
    assert set(users) == {"admin", "dora", "gen"}
    assert users["admin"]["role"] == "Owner" and users["admin"]["lastLogin"] is not None

    resp = await client.post("/admin/users", json={"name": "dora"}, headers=admin_headers)
    assert resp.status == 409
    resp = await client.get("/admin/users/nobody", headers=admin_headers)
    assert resp.status == 404


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/admin/users", {"name": "bad name"}, "name"),
        ("POST", "/admin/users", {"name": "ok", "role": "King"}, "role"),
        ("POST", "/admin/users", {"name": "ok", "password": "short"}, "password"),
        ("POST", "/admin/users", {"name": "ok", "colour": "red"}, "colour"),
        ("PATCH", "/admin/users/admin", {"disabled": "maybe"}, "disabled"),
        ("PATCH", "/admin/users/admin", {}, "role"),
        ("POST", "/admin/users/admin/transfer", {}, "to"),
    ],
)
async def test_bad_input_names_the_field(
    client: TestClient[Any, Any],
    admin_headers: dict[str, str],
    method: str,
    path: str,
    body: dict[str, Any],
    field: str,
) -> None:
    resp = await client.request(method, path, json=body, headers=admin_headers)
    assert resp.status == 400, await resp.text()
    error = await resp.json()
    assert field in error["message"] and error["exceptionType"]


async def test_disable_ends_logins_at_once(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    await create_user(client, admin_headers, "erin")
    pair = await login(client, "erin", "password-123")
    headers = bearer(pair["access_token"])
    assert (await client.get("/sessions", headers=headers)).status == 200

    resp = await client.patch("/admin/users/erin", json={"disabled": True}, headers=admin_headers)
    assert resp.status == 200 and (await resp.json())["disabled"] is True
    assert (await client.get("/sessions", headers=headers)).status == 401  # the same token
    resp = await client.post("/login/refreshToken", json={"refreshToken": pair["refresh_token"]})
    assert resp.status == 401
    resp = await client.post("/login", json={"username": "erin", "password": "password-123"})
    assert resp.status == 401

    await client.patch("/admin/users/erin", json={"disabled": False}, headers=admin_headers)
    await login(client, "erin", "password-123")


async def test_end_logins_and_set_password(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    await create_user(client, admin_headers, "finn")
    headers = bearer((await login(client, "finn", "password-123"))["access_token"])
    resp = await client.patch("/admin/users/finn", json={"endLogins": True}, headers=admin_headers)
    assert resp.status == 200
    assert (await client.get("/sessions", headers=headers)).status == 401
    headers = bearer((await login(client, "finn", "password-123"))["access_token"])

    resp = await client.patch(
        "/admin/users/finn", json={"password": "new-password-456"}, headers=admin_headers
    )
    assert resp.status == 200
    assert (await client.get("/sessions", headers=headers)).status == 401
    resp = await client.post("/login", json={"username": "finn", "password": "password-123"})
    assert resp.status == 401
    await login(client, "finn", "new-password-456")

    resp = await client.patch("/admin/users/finn", json={"role": "Owner"}, headers=admin_headers)
    assert (await resp.json())["role"] == "Owner"
    owner = bearer((await login(client, "finn", "new-password-456"))["access_token"])
    assert (await client.get("/admin/users", headers=owner)).status == 200


async def test_the_last_enabled_owner_stays(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    for body in ({"role": "Reader"}, {"role": "Contributor"}, {"disabled": True}):
        resp = await client.patch("/admin/users/admin", json=body, headers=admin_headers)
        assert resp.status == 409, body
        assert "Owner" in (await resp.json())["message"]
    resp = await client.delete("/admin/users/admin", headers=admin_headers)
    assert resp.status == 409
    # a disabled second Owner does not count
    await create_user(client, admin_headers, "olga", "Owner")
    await client.patch("/admin/users/olga", json={"disabled": True}, headers=admin_headers)
    resp = await client.patch("/admin/users/admin", json={"role": "Reader"}, headers=admin_headers)
    assert resp.status == 409
    # an enabled one does
    await client.patch("/admin/users/olga", json={"disabled": False}, headers=admin_headers)
    resp = await client.patch("/admin/users/admin", json={"role": "Reader"}, headers=admin_headers)
    assert resp.status == 200
    assert (await client.get("/admin/users", headers=admin_headers)).status == 403


async def test_delete_closes_sessions_and_hands_over_services(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    await create_user(client, admin_headers, "gus")
    headers = bearer((await login(client, "gus", "password-123"))["access_token"])
    session_id = await new_session(client, headers)
    await publish(client, headers, "GusService", "1", code="x = 1")

    resp = await client.delete("/admin/users/gus", headers=admin_headers)
    assert resp.status == 409
    assert "transfer" in (await resp.json())["message"]
    resp = await client.delete("/admin/users/gus?transferTo=nobody", headers=admin_headers)
    assert resp.status == 404

    resp = await client.delete("/admin/users/gus?transferTo=admin", headers=admin_headers)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["sessionsClosed"] == 1 and body["moved"]["services"] == 1
    assert (await client.get("/admin/users/gus", headers=admin_headers)).status == 404
    assert (await client.get("/sessions", headers=headers)).status == 401

    services = await (await client.get("/admin/services", headers=admin_headers)).json()
    assert [(s["name"], s["publisher"]) for s in services] == [("GusService", "admin")]
    resp = await client.get("/services/GusService/1", headers=admin_headers)
    assert (await resp.json())[0]["versionPublishedBy"] == "admin"
    sessions = await (await client.get("/admin/sessions", headers=admin_headers)).json()
    assert {s["id"]: s["state"] for s in sessions}.get(session_id) in (None, "dead")

    actions = [(e.action, e.target) for e in await audit_entries(client, actor="admin")]
    assert ("user.delete", "gus") in actions and ("user.create", "gus") in actions


async def test_transfer(client: TestClient[Any, Any], admin_headers: dict[str, str]) -> None:
    await create_user(client, admin_headers, "hal")
    await create_user(client, admin_headers, "ivy")
    headers = bearer((await login(client, "hal", "password-123"))["access_token"])
    await publish(client, headers, "HalService", "1", code="x = 1")
    resp = await client.post("/admin/users/hal/transfer", json={"to": "ivy"}, headers=admin_headers)
    assert resp.status == 200
    assert await resp.json() == {"from": "hal", "to": "ivy", "services": 1, "snapshots": 0}
    ivy = bearer((await login(client, "ivy", "password-123"))["access_token"])
    resp = await client.delete("/services/HalService/1", headers=ivy)
    assert resp.status == 200, await resp.text()
    resp = await client.post("/admin/users/hal/transfer", json={"to": "hal"}, headers=admin_headers)
    assert resp.status == 400


def _offline_cli_env(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    """The environment of an offline ``o16n users`` on the store of ``settings``."""
    monkeypatch.setenv("O16N_DATA_DIR", str(settings.data_dir))
    for name, value in database_env(settings.data_dir).items():
        monkeypatch.setenv(name, value)


def test_the_offline_cli_is_audited(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _offline_cli_env(monkeypatch, settings)
    monkeypatch.setattr("sys.stdin", _Lines("cli-password-1\n"))
    assert cli.main(["users", "add", "jo", "--password-stdin"]) == 0
    assert cli.main(["users", "set-role", "jo", "Reader"]) == 0
    assert cli.main(["users", "disable", "jo"]) == 0

    async def read() -> list[tuple[str, str, str, str]]:
        db = await open_database(settings)
        try:
            entries = await AuditRepo(db).page(AuditQuery(actor="cli"))
        finally:
            await db.close()
        return [(e.action, e.target, e.outcome, str(e.detail)) for e in entries]

    entries = asyncio.run(read())
    assert [e[:3] for e in entries] == [
        ("user.change", "jo", "ok"),
        ("user.change", "jo", "ok"),
        ("user.create", "jo", "ok"),
    ]
    assert not any("cli-password-1" in e[3] for e in entries)


class _Lines:
    def __init__(self, text: str) -> None:
        self._lines = text.splitlines(keepends=True)

    def readline(self) -> str:
        return self._lines.pop(0) if self._lines else ""


async def test_delete_refuses_a_user_who_owns_work_at_the_last_moment(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    """A service published (or snapshot made) after DELETE's first check: the delete is
    409, never a foreign-key 500, and never a snapshot deleted with its owner."""
    await create_user(client, admin_headers, "kim")
    headers = bearer((await login(client, "kim", "password-123"))["access_token"])
    await publish(client, headers, "KimService", "1", code="x = 1")
    with pytest.raises(ConflictError):
        await client.app[AUTH].directory.users_repo.delete("kim")
    services = await (await client.get("/admin/services", headers=admin_headers)).json()
    assert [(s["name"], s["publisher"]) for s in services] == [("KimService", "kim")]


async def test_delete_ends_the_users_logins_before_closing_sessions(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    """While its sessions close, the user being deleted can start nothing new."""
    await create_user(client, admin_headers, "lou")
    headers = bearer((await login(client, "lou", "password-123"))["access_token"])
    await new_session(client, headers)
    seen: list[int] = []
    sessions = client.app[SESSIONS]
    close = sessions.close_by_admin

    async def close_and_try(session_id: str) -> Any:
        seen.append((await client.post("/sessions", json={}, headers=headers)).status)
        return await close(session_id)

    sessions.close_by_admin = close_and_try  # type: ignore[method-assign]
    resp = await client.delete("/admin/users/lou", headers=admin_headers)
    assert resp.status == 200, await resp.text()
    assert seen == [401]


async def _record(db: Database, source: str, name: str, role: Role) -> None:
    """A user as a directory login records them (LDAP / Azure AD), straight into the store;
    LDAP users with the display name and email their directory gives."""
    await UsersRepo(db).sync_directory_user(
        source,
        f"{source}-id-of-{name}",
        name,
        role,
        display_name=f"{name.title()} Example" if source == "ldap" else None,
        email=f"{name}@example.com" if source == "ldap" else None,
        disabled=False,
        checked_at=time.time(),
    )


async def _directory_user(
    client: TestClient[Any, Any], source: str, name: str, role: Role = Role.CONTRIBUTOR
) -> None:
    """``_record``, and the running server's view of its users reloaded."""
    await _record(client.app[DB], source, name, role)
    await client.app[AUTH].directory.reload()


async def test_directory_users_are_listed_with_their_source(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    await _directory_user(client, "ldap", "lena")
    await _directory_user(client, "aad", "0000aaaa-oid")
    resp = await client.get("/admin/users", headers=admin_headers)
    users = {u["name"]: u for u in await resp.json()}
    assert {n: (u["source"], u["displayName"], u["email"]) for n, u in users.items()} == {
        "admin": ("local", None, None),
        "lena": ("ldap", "Lena Example", "lena@example.com"),
        "0000aaaa-oid": ("aad", None, None),
    }
    one = await (await client.get("/admin/users/lena", headers=admin_headers)).json()
    assert one == users["lena"] and one["role"] == "Contributor"


@pytest.mark.parametrize("source", ["ldap", "aad"])
async def test_the_directory_keeps_a_directory_users_password_and_role(
    client: TestClient[Any, Any], admin_headers: dict[str, str], source: str
) -> None:
    await _directory_user(client, source, "dirk")
    resp = await client.patch(
        "/admin/users/dirk", json={"password": "new-password-456"}, headers=admin_headers
    )
    assert resp.status == 409
    body = await resp.json()
    assert body["exceptionType"] == "ConflictError" and "password" in body["message"]
    assert "directory" in body["message"]
    resp = await client.patch("/admin/users/dirk", json={"role": "Owner"}, headers=admin_headers)
    assert resp.status == 409
    assert "Authorization" in (await resp.json())["message"]
    # a refused change changes nothing, not even what came with it
    resp = await client.patch(
        "/admin/users/dirk", json={"role": "Reader", "disabled": True}, headers=admin_headers
    )
    assert resp.status == 409
    record = await UsersRepo(client.app[DB]).by_name("dirk")
    assert record is not None and record.role is Role.CONTRIBUTOR and not record.disabled
    assert record.password_hash == ""


async def test_what_still_works_for_directory_users(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    await _directory_user(client, "ldap", "dana")
    resp = await client.patch("/admin/users/dana", json={"disabled": True}, headers=admin_headers)
    assert resp.status == 200 and (await resp.json())["disabled"] is True
    resp = await client.patch("/admin/users/dana", json={"disabled": False}, headers=admin_headers)
    assert resp.status == 200 and (await resp.json())["disabled"] is False
    resp = await client.patch("/admin/users/dana", json={"endLogins": True}, headers=admin_headers)
    assert resp.status == 200
    resp = await client.post(
        "/admin/users/admin/transfer", json={"to": "dana"}, headers=admin_headers
    )
    assert resp.status == 200
    resp = await client.delete("/admin/users/dana", headers=admin_headers)
    assert resp.status == 200, await resp.text()
    assert (await client.get("/admin/users/dana", headers=admin_headers)).status == 404


def _seed_directory_users(settings: Settings) -> None:
    """An LDAP and an Azure AD user, as their first logins record them."""

    async def seed() -> None:
        db = await open_database(settings)
        try:
            await _record(db, "ldap", "lars", Role.READER)
            await _record(db, "aad", "0000bbbb-oid", Role.READER)
        finally:
            await db.close()

    asyncio.run(seed())


def test_the_offline_cli_lists_directory_users(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _offline_cli_env(monkeypatch, settings)
    _seed_directory_users(settings)
    monkeypatch.setattr("sys.stdin", _Lines("cli-password-1\n"))
    assert cli.main(["users", "add", "loc", "--password-stdin"]) == 0
    capsys.readouterr()
    assert cli.main(["users", "list"]) == 0
    rows = {line.split("\t")[0]: line.split("\t") for line in capsys.readouterr().out.splitlines()}
    assert rows["loc"][1:] == ["Contributor", "active", "local", "", ""]
    assert rows["lars"][1:] == ["Reader", "active", "ldap", "Lars Example", "lars@example.com"]
    assert rows["0000bbbb-oid"][1:] == ["Reader", "active", "aad", "", ""]


def test_the_offline_cli_leaves_a_directory_users_password_and_role_to_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _offline_cli_env(monkeypatch, settings)
    _seed_directory_users(settings)
    for name in ("lars", "0000bbbb-oid"):
        stdin = _Lines("cli-password-2\n")
        monkeypatch.setattr("sys.stdin", stdin)
        assert cli.main(["users", "set-password", name, "--password-stdin"]) == 1
        assert "keeps the password" in capsys.readouterr().err
        assert stdin.readline() == "cli-password-2\n"  # refused before asking for one
        assert cli.main(["users", "set-role", name, "Owner"]) == 1
        assert "Authorization" in capsys.readouterr().err
        assert cli.main(["users", "disable", name]) == 0
        assert cli.main(["users", "enable", name]) == 0
    capsys.readouterr()
    assert cli.main(["users", "list"]) == 0
    listed = capsys.readouterr().out
    assert "lars\tReader\tactive\tldap" in listed and "0000bbbb-oid\tReader\tactive" in listed
