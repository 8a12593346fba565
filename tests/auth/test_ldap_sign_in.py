"""LDAP / Active Directory users end to end, against a real slapd: ``POST /login`` with the
directory's password, roles from groups (looked up again after the cache lifetime), the
account recorded at first login, 503 while the directory is away, and Microsoft's SDK
with ``auth=(user, password)``."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ldap
import pytest
from aiohttp.test_utils import TestClient
from azureml.deploy import DeployClient
from azureml.deploy.server import MLServer

from controller.app import create_app
from controller.auth.ldap_login import FAIL_SECONDS, LOOKUP_WAIT
from controller.auth.service import AUTH
from controller.roles import Role
from tests.auth.conftest import directory_client
from tests.conftest import ADMIN_PASSWORD, bearer, make_settings
from tests.ldap_server import GROUPS, LdapServer, available


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LdapServer]:
    """A slapd of this module's own: its tests change the directory's data."""
    reason = available()
    if reason:
        pytest.skip(reason)
    with LdapServer(tmp_path_factory.mktemp("slapd-sign-in")) as server:
        yield server


def modify(server: LdapServer, dn: str, changes: list[tuple[int, str, list[bytes] | None]]) -> None:
    conn = ldap.initialize(server.ldap_url)
    try:
        conn.simple_bind_s(server.admin_dn, server.admin_password)
        conn.modify_s(dn, changes)
    finally:
        conn.unbind_s()


async def ldap_client(
    aiohttp_client: Any,
    data_dir: Path,
    server: LdapServer,
    *,
    cache_minutes: int = 60,
    ldaps: bool = False,
    **settings: Any,
) -> TestClient[Any, Any]:
    document = server.appsettings(ldaps=ldaps)
    document["Authorization"]["CacheLifeTimeInMinutes"] = str(cache_minutes)
    values: dict[str, Any] = {"ldap_ca_file": server.ca_file, "ldap_timeout": 2.0, **settings}
    return await directory_client(aiohttp_client, data_dir, document, **values)


async def login(client: TestClient[Any, Any], name: str, password: str) -> Any:
    return await client.post("/login", json={"username": name, "password": password})


async def token_of(client: TestClient[Any, Any], name: str, password: str) -> dict[str, str]:
    resp = await login(client, name, password)
    assert resp.status == 200, await resp.text()
    return bearer((await resp.json())["access_token"])


@pytest.mark.parametrize("ldaps", [False, True], ids=["starttls", "ldaps"])
async def test_directory_users_log_in_with_roles_from_their_groups(
    aiohttp_client: Any, data_dir: Path, directory: LdapServer, ldaps: bool
) -> None:
    client = await ldap_client(aiohttp_client, data_dir, directory, ldaps=ldaps)
    alice, bob, zoe = (directory.users[k] for k in ("alice", "bob", "zoe"))
    owner = await token_of(client, alice.login, alice.password)
    resp = await client.get("/admin/users", headers=owner)
    assert resp.status == 200, await resp.text()
    listed = {u["name"]: u for u in await resp.json()}
    assert listed["alice"]["role"] == "Owner" and listed["alice"]["source"] == "ldap"
    assert listed["alice"]["displayName"] == alice.display_name

    reader = await token_of(client, bob.login, bob.password)  # AD-style: memberOf
    resp = await client.post("/services/s/1", headers=reader, json={"code": "y = 1"})
    assert resp.status == 403 and "Reader" in (await resp.json())["message"]
    # a name with *, ( and ) and non-ASCII letters is only text to the search
    assert (await login(client, zoe.login, zoe.password)).status == 200


async def test_wrong_password_unknown_user_and_injection_get_the_same_401(
    aiohttp_client: Any, data_dir: Path, directory: LdapServer
) -> None:
    client = await ldap_client(aiohttp_client, data_dir, directory)
    alice = directory.users["alice"]
    answers = []
    for name, password in [
        (alice.login, "wrong-" + alice.password),
        ("nobody-here", alice.password),
        ("*", alice.password),
        ("alice)(uid=*", alice.password),
        ("*)(|(uid=*", alice.password),
        ("twin", directory.users["twin"].password),  # two entries: refused
        ("carol", directory.users["carol"].password),  # disabled in AD
        ("erin", directory.users["erin"].password),  # locked by ppolicy
    ]:
        resp = await login(client, name, password)
        body = await resp.json()
        body.pop("requestId")  # each request's own
        answers.append((resp.status, json.dumps(body, sort_keys=True)))
    assert len(set(answers)) == 1, answers
    status, text = answers[0]
    assert status == 401
    assert "dc=" not in text.lower() and "ldap" not in text.lower()


async def test_the_directorys_spellings_of_a_name_share_its_failed_login_count(
    aiohttp_client: Any, data_dir: Path, directory: LdapServer
) -> None:
    """The directory matches " alice", "ALICE " and full-width letters as alice: counting
    each spelling apart would give every one a fresh guess at alice's password."""
    client = await ldap_client(
        aiohttp_client,
        data_dir,
        directory,
        login_max_failures=3,
        login_max_failures_per_address=3,
        login_max_failures_per_user=3,
    )
    alice = directory.users["alice"]
    wrong = "wrong-" + alice.password
    assert [(await login(client, alice.login, wrong)).status for _ in range(3)] == [401] * 3
    spellings = [" alice", "alice  ", "ALICE", " Alice ", "\uff41\uff4c\uff49\uff43\uff45"]
    assert (await directory_matches(directory, spellings)) == [alice.login] * len(spellings)
    assert [(await login(client, name, wrong)).status for name in spellings] == [429] * len(
        spellings
    )


async def directory_matches(server: LdapServer, names: list[str]) -> list[str | None]:
    """Whom the directory signs in under each of ``names`` with alice's password."""
    from controller.auth.ldap_accounts import LdapAccounts

    accounts = LdapAccounts(server.config())
    try:
        found = [await accounts.authenticate(n, server.users["alice"].password) for n in names]
    finally:
        await accounts.close()
    return [a.unique_id if a else None for a in found]


async def test_an_empty_password_is_refused_before_any_bind(
    aiohttp_client: Any, data_dir: Path, directory: LdapServer
) -> None:
    client = await ldap_client(aiohttp_client, data_dir, directory)
    before = directory.binds()
    resp = await login(client, "alice", "")
    assert resp.status in (400, 401)
    assert directory.binds() == before + 1  # binds() itself binds once


async def test_no_listed_group_means_no_access_when_reader_is_declared(
    aiohttp_client: Any, data_dir: Path, directory: LdapServer
) -> None:
    client = await ldap_client(aiohttp_client, data_dir, directory)
    dave = directory.users["dave"]
    resp = await login(client, dave.login, dave.password)
    assert resp.status == 403
    assert "group" in (await resp.json())["message"]


async def test_a_login_that_finds_its_user_in_no_group_ends_the_users_tokens(
    aiohttp_client: Any, data_dir: Path, directory: LdapServer
) -> None:
    """The login read the user's groups now: as a new role applies at once to the tokens
    the user holds, so does having none, not only at the next lookup an hour later."""
    client = await ldap_client(aiohttp_client, data_dir, directory, cache_minutes=60)
    bob = directory.users["bob"]
    token = await token_of(client, bob.login, bob.password)
    readers = f"cn=o16n-readers,{GROUPS}".encode()
    modify(directory, bob.dn, [(ldap.MOD_DELETE, "memberOf", [readers])])
    try:
        assert (await login(client, bob.login, bob.password)).status == 403
        assert (await client.get("/services", headers=token)).status == 401
    finally:
        modify(directory, bob.dn, [(ldap.MOD_ADD, "memberOf", [readers])])


async def test_local_accounts_are_off_unless_kept_as_a_break_glass(
    aiohttp_client: Any, data_dir: Path, directory: LdapServer
) -> None:
    client = await ldap_client(aiohttp_client, data_dir, directory)
    assert (await login(client, "admin", ADMIN_PASSWORD)).status == 401
    kept = await ldap_client(aiohttp_client, data_dir / "kept", directory, local_accounts=True)
    assert (await login(kept, "admin", ADMIN_PASSWORD)).status == 200


async def test_beside_local_accounts_a_directory_login_costs_a_password_hash_too(
    aiohttp_client: Any, data_dir: Path, directory: LdapServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Else a fast 401 would tell that a name is no local account (the hash is the time)."""
    from controller.auth import service

    hashed: list[str] = []
    real = service.verify_password_async

    async def counting(password_hash: str, password: str) -> bool:
        hashed.append(password)
        return await real(password_hash, password)

    monkeypatch.setattr(service, "verify_password_async", counting)
    client = await ldap_client(aiohttp_client, data_dir, directory, local_accounts=True)
    alice = directory.users["alice"]
    assert (await login(client, "nobody-here", "some-password")).status == 401
    assert (await login(client, alice.login, alice.password)).status == 200
    assert (await login(client, "admin", "wrong-password")).status == 401
    assert hashed == ["some-password", alice.password, "wrong-password"]


async def test_roles_are_looked_up_again_after_the_cache_lifetime(
    aiohttp_client: Any, data_dir: Path, directory: LdapServer
) -> None:
    alice = directory.users["alice"]
    owners = f"cn=o16n-owners,{GROUPS}"
    client = await ldap_client(aiohttp_client, data_dir, directory, cache_minutes=0)
    cached = await ldap_client(aiohttp_client, data_dir / "cached", directory, cache_minutes=60)
    resp = await login(client, alice.login, alice.password)
    pair = await resp.json()
    fresh = bearer(pair["access_token"])
    kept = await token_of(cached, alice.login, alice.password)
    assert (await client.get("/admin/users", headers=fresh)).status == 200
    modify(directory, owners, [(ldap.MOD_DELETE, "member", [alice.dn.encode()])])
    try:
        resp = await client.get("/admin/users", headers=fresh)
        assert resp.status == 403, await resp.text()  # now a Contributor
        assert (await client.get("/services", headers=fresh)).status == 200
        # within the cache lifetime the role looked up at login stands
        assert (await cached.get("/admin/users", headers=kept)).status == 200

        modify(
            directory,
            alice.dn,
            [(ldap.MOD_ADD, "pwdAccountLockedTime", [b"000001010000Z"])],
        )
        resp = await client.get("/services", headers=fresh)
        assert resp.status == 401, await resp.text()  # disabled: its logins end
        resp = await client.post(
            "/login/refreshToken", json={"refreshToken": pair["refresh_token"]}
        )
        assert resp.status == 401, await resp.text()
    finally:
        modify(directory, owners, [(ldap.MOD_ADD, "member", [alice.dn.encode()])])
        modify(directory, alice.dn, [(ldap.MOD_DELETE, "pwdAccountLockedTime", None)])


async def test_an_unreachable_directory_is_503_for_logins_and_fail_in_status(
    aiohttp_client: Any, data_dir: Path, directory: LdapServer
) -> None:
    client = await ldap_client(aiohttp_client, data_dir, directory, local_accounts=True)
    alice = directory.users["alice"]
    signed_in = await token_of(client, alice.login, alice.password)
    local = await token_of(client, "admin", ADMIN_PASSWORD)
    with directory.stopped():
        resp = await login(client, alice.login, alice.password)
        assert resp.status == 503
        body = await resp.json()
        assert set(body) >= {"message", "exceptionType"}
        assert "dc=" not in json.dumps(body).lower()
        status = await (await client.get("/status", headers=local)).json()
        assert status["components"]["directory"]["statusCode"] == "fail"
        # local accounts, and the roles already looked up, go on working
        assert (await login(client, "admin", ADMIN_PASSWORD)).status == 200
        assert (await client.get("/services", headers=local)).status == 200
        assert (await client.get("/services", headers=signed_in)).status == 200
    await asyncio.sleep(FAIL_SECONDS + 0.1)
    status = await (await client.get("/status", headers=local)).json()
    assert status["components"]["directory"]["statusCode"] == "pass"


async def test_a_silent_directory_does_not_stall_a_signed_in_users_requests(
    aiohttp_client: Any, data_dir: Path, directory: LdapServer
) -> None:
    """Roles due for a lookup while the directory accepts and never answers: the request
    goes on with the roles looked up last after LOOKUP_WAIT, not the LDAP timeout (with
    4 workers and more users, several timeouts)."""
    client = await ldap_client(
        aiohttp_client, data_dir, directory, cache_minutes=0, ldap_timeout=3.0
    )
    alice = directory.users["alice"]
    token = await token_of(client, alice.login, alice.password)
    with directory.paused():
        started = time.monotonic()
        assert (await client.get("/services", headers=token)).status == 200
        assert time.monotonic() - started < LOOKUP_WAIT + 1.0
        started = time.monotonic()  # while the lookup goes on: no second wait
        assert (await client.get("/services", headers=token)).status == 200
        assert time.monotonic() - started < 0.5
        await asyncio.sleep(3.5)  # the lookup times out: the cached roles serve for now
    assert (await client.get("/services", headers=token)).status == 200


async def test_concurrent_first_logins_of_one_user_make_one_account(
    aiohttp_client: Any, data_dir: Path, directory: LdapServer
) -> None:
    """They race to record zoe (under the login throttle's five attempts at a time)."""
    client = await ldap_client(aiohttp_client, data_dir, directory)
    zoe = directory.users["zoe"]
    answers = await asyncio.gather(*(login(client, zoe.login, zoe.password) for _ in range(4)))
    assert [a.status for a in answers] == [200] * 4
    users = await client.app[AUTH].directory.users_repo.all()
    assert [u.source for u in users if u.external_id == zoe.login] == ["ldap"]


async def test_switching_ldap_off_ends_its_users_tokens_not_local_ones(
    aiohttp_client: Any, data_dir: Path, directory: LdapServer
) -> None:
    """A restart without the LDAP section: its users' tokens (still signed with our key)
    stop counting, their names are no local accounts, and local tokens go on working."""
    client = await ldap_client(aiohttp_client, data_dir, directory, local_accounts=True)
    alice = directory.users["alice"]
    pair = await (await login(client, alice.login, alice.password)).json()
    local = await token_of(client, "admin", ADMIN_PASSWORD)
    await client.close()
    off: TestClient[Any, Any] = await aiohttp_client(create_app(make_settings(data_dir)))
    assert (await off.get("/services", headers=bearer(pair["access_token"]))).status == 401
    resp = await off.post("/login/refreshToken", json={"refreshToken": pair["refresh_token"]})
    assert resp.status == 401
    assert (await login(off, alice.login, alice.password)).status == 401
    assert (await off.get("/services", headers=local)).status == 200


async def test_a_local_account_with_an_ldap_users_name_is_never_taken_over(
    aiohttp_client: Any, data_dir: Path, directory: LdapServer
) -> None:
    """Beside local accounts, "alice" is the local one; with them off, the directory's
    alice (whose unique id is that name) cannot log in rather than own it."""
    client = await ldap_client(aiohttp_client, data_dir, directory, local_accounts=True)
    admin = await token_of(client, "admin", ADMIN_PASSWORD)
    local = {"name": "alice", "password": "local-password-1", "role": "Reader"}
    assert (await client.post("/admin/users", headers=admin, json=local)).status == 201
    alice = directory.users["alice"]
    assert (await login(client, alice.login, alice.password)).status == 401
    assert (await login(client, "alice", "local-password-1")).status == 200
    await client.close()
    off = await ldap_client(aiohttp_client, data_dir, directory)
    resp = await login(off, alice.login, alice.password)
    assert resp.status == 401 and "alice" not in await resp.text()
    user = await off.app[AUTH].directory.users_repo.by_name("alice")
    assert user is not None and user.source == "local" and user.role is Role.READER


async def test_no_password_reaches_the_log(
    aiohttp_client: Any,
    data_dir: Path,
    directory: LdapServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    client = await ldap_client(aiohttp_client, data_dir, directory)
    alice = directory.users["alice"]
    assert (await login(client, alice.login, alice.password)).status == 200
    assert (await login(client, alice.login, alice.password + "x")).status == 401
    with directory.stopped():
        assert (await login(client, alice.login, alice.password)).status == 503
    assert alice.password not in caplog.text
    assert directory.query_password not in caplog.text


async def test_microsofts_sdk_signs_in_with_a_directory_password(
    aiohttp_client: Any, data_dir: Path, directory: LdapServer
) -> None:
    client = await ldap_client(aiohttp_client, data_dir, directory)
    alice = directory.users["alice"]
    base = str(client.make_url("/")).rstrip("/")

    def use_sdk() -> list[Any]:
        sdk = DeployClient(base, use=MLServer, auth=(alice.login, alice.password))
        services: list[Any] = sdk.list_services()
        return services

    assert await asyncio.to_thread(use_sdk) == []
