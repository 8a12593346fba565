"""``o16n_logins_total`` for directory users: LDAP at ``/login`` (a real slapd) and Azure AD,
whose sign-in is a token's first verification, not each request that reuses it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.auth.conftest import directory_client
from tests.conftest import bearer
from tests.ldap_server import LdapServer, available
from tests.metrics.conftest import Scrape, scrape
from tests.oidc_provider import OidcProvider

OWNERS = "6f4ae5d0-0000-4000-8000-0000000000a1"
READERS = "6f4ae5d0-0000-4000-8000-0000000000a3"
LOGINS = "o16n_logins_total"


@pytest.fixture
def oidc_provider() -> Iterator[OidcProvider]:
    with OidcProvider() as provider:
        yield provider


@pytest.fixture(scope="module")
def ldap_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LdapServer]:
    reason = available()
    if reason:
        pytest.skip(reason)
    with LdapServer(tmp_path_factory.mktemp("slapd-metrics")) as server:
        yield server


def grown(before: Scrape, after: Scrape, source: str, outcome: str) -> float:
    return after.value(LOGINS, source=source, outcome=outcome) - before.value(
        LOGINS, source=source, outcome=outcome
    )


async def test_azure_ad_sign_ins_are_counted_once_per_token(
    aiohttp_client: Any, data_dir: Path, oidc_provider: OidcProvider
) -> None:
    document = oidc_provider.appsettings(owner=[OWNERS], contributor=[], reader=[])
    client: TestClient[Any, Any] = await directory_client(aiohttp_client, data_dir, document)
    first = bearer(oidc_provider.token("olga@contoso.example", groups=[OWNERS]))
    before = await scrape(client, first)  # the token's first use: one sign-in
    for _ in range(3):
        assert (await client.get("/services", headers=first)).status == 200
    forged = oidc_provider.token("mallory@contoso.example", groups=[OWNERS], forged=True)
    assert (await client.get("/services", headers=bearer(forged))).status == 401
    after = await scrape(client, first)
    assert grown(before, after, "aad", "success") == 0  # reused: no new sign-in
    assert grown(before, after, "aad", "failure") == 1
    assert after.value(LOGINS, source="aad", outcome="success") >= 1
    assert "olga" not in after.text and "mallory" not in after.text


async def test_an_azure_ad_user_no_group_admits_is_a_failed_sign_in(
    aiohttp_client: Any, data_dir: Path, oidc_provider: OidcProvider
) -> None:
    """A good token of a user in none of the role groups gets 403, as an LDAP user no group
    admits does: a failure (once per token, as a success is), not a success."""
    document = oidc_provider.appsettings(owner=[OWNERS], contributor=[], reader=[READERS])
    client: TestClient[Any, Any] = await directory_client(aiohttp_client, data_dir, document)
    owner = bearer(oidc_provider.token("olga@contoso.example", groups=[OWNERS]))
    before = await scrape(client, owner)
    stranger = bearer(oidc_provider.token("sven@contoso.example", groups=[]))
    for _ in range(2):
        assert (await client.get("/services", headers=stranger)).status == 403
    after = await scrape(client, owner)
    assert grown(before, after, "aad", "success") == 0
    assert grown(before, after, "aad", "failure") == 1


async def test_ldap_logins_are_counted_by_outcome(
    aiohttp_client: Any, data_dir: Path, ldap_server: LdapServer
) -> None:
    document = ldap_server.appsettings()
    client: TestClient[Any, Any] = await directory_client(
        aiohttp_client, data_dir, document, ldap_ca_file=ldap_server.ca_file, ldap_timeout=2.0
    )
    alice = ldap_server.users["alice"]

    async def login(password: str) -> Any:
        return await client.post("/login", json={"username": alice.login, "password": password})

    resp = await login(alice.password)
    assert resp.status == 200, await resp.text()
    headers = bearer((await resp.json())["access_token"])
    before = await scrape(client, headers)
    assert (await login(alice.password)).status == 200
    assert (await login("wrong-" + alice.password)).status == 401
    with ldap_server.stopped():
        assert (await login(alice.password)).status == 503
    after = await scrape(client, headers)
    assert grown(before, after, "ldap", "success") == 1
    assert grown(before, after, "ldap", "failure") == 1
    assert grown(before, after, "ldap", "unavailable") == 1
    assert alice.login not in after.text
