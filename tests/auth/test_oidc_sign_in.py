"""Azure AD users end to end: the provider's access token as the bearer, roles from its
``groups`` claim, the account recorded at first use, Microsoft's SDK with ``auth=<token>``."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from azureml.deploy import DeployClient
from azureml.deploy.server import MLServer

from tests.auth.conftest import directory_client
from tests.conftest import ADMIN_PASSWORD, bearer
from tests.oidc_provider import OidcProvider

OWNERS = "6f4ae5d0-0000-4000-8000-0000000000a1"
CONTRIBUTORS = "6f4ae5d0-0000-4000-8000-0000000000b2"


async def aad_client(
    aiohttp_client: Any,
    data_dir: Path,
    idp: OidcProvider,
    *,
    reader: list[str] | None = None,
    **settings: Any,
) -> TestClient[Any, Any]:
    document = idp.appsettings(owner=[OWNERS], contributor=[CONTRIBUTORS], reader=reader or [])
    return await directory_client(
        aiohttp_client, data_dir, document, oidc_jwks_cooldown=0.5, **settings
    )


@pytest.fixture
async def aad(
    aiohttp_client: Any, data_dir: Path, oidc_provider: OidcProvider
) -> AsyncIterator[TestClient[Any, Any]]:
    yield await aad_client(aiohttp_client, data_dir, oidc_provider)


async def test_a_provider_token_is_the_bearer_and_its_groups_give_the_role(
    aad: TestClient[Any, Any], oidc_provider: OidcProvider
) -> None:
    owner = oidc_provider.token("olga@contoso.example", groups=[OWNERS.upper()])
    resp = await aad.get("/admin/users", headers=bearer(owner))
    assert resp.status == 200, await resp.text()
    users = {u["name"]: u for u in await resp.json()}
    assert users["olga@contoso.example"]["role"] == "Owner"
    assert users["olga@contoso.example"]["source"] == "aad"

    plain = oidc_provider.token("carl@contoso.example", groups=[CONTRIBUTORS])
    assert (await aad.get("/services", headers=bearer(plain))).status == 200
    resp = await aad.get("/admin/users", headers=bearer(plain))
    assert resp.status == 403, await resp.text()

    # ML Server's rule: with Contributor declared, a user in no listed group is a Reader
    nobody = oidc_provider.token("nina@contoso.example", groups=["someone-else"])
    resp = await aad.post("/services/s/1", headers=bearer(nobody), json={"code": "y = 1"})
    assert resp.status == 403, await resp.text()
    assert "Reader" in (await resp.json())["message"]


async def test_a_group_overage_gets_403_that_says_so(
    aad: TestClient[Any, Any], oidc_provider: OidcProvider
) -> None:
    token = oidc_provider.token("many@contoso.example", overage=True)
    resp = await aad.get("/services", headers=bearer(token))
    assert resp.status == 403
    body = await resp.json()
    assert "group" in body["message"] and body["exceptionType"]


async def test_bad_tokens_get_401_and_local_accounts_are_off(
    aad: TestClient[Any, Any], oidc_provider: OidcProvider
) -> None:
    expired = oidc_provider.token(groups=[OWNERS], lifetime=-3600)
    forged = oidc_provider.token(groups=[OWNERS], forged=True)
    other_audience = oidc_provider.token(groups=[OWNERS], audience="api://someone-else")
    for token in (expired, forged, other_audience, "not.a.token"):
        resp = await aad.get("/services", headers=bearer(token))
        assert resp.status == 401, token
        assert set(await resp.json()) >= {"message", "exceptionType"}
    resp = await aad.post("/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert resp.status == 401
    assert "Azure Active Directory" in (await resp.json())["message"]


async def test_a_bearer_of_deeply_nested_json_is_401_not_500(
    aad: TestClient[Any, Any], oidc_provider: OidcProvider
) -> None:
    """A header no JOSE library can read goes to our own tokens' check (``is_ours``), whose
    JSON parser then recurses too deep: that is a bad token, not a server error."""
    _, body, signature = oidc_provider.token(groups=[OWNERS]).split(".")
    for nested in (b"[" * 3000, b'{"alg": "RS256", "kid": ' + b"[" * 3000):
        head = base64.urlsafe_b64encode(nested).rstrip(b"=").decode()
        resp = await aad.get("/services", headers=bearer(f"{head}.{body}.{signature}"))
        assert resp.status == 401, await resp.text()
        assert (await resp.json())["exceptionType"] == "UnauthorizedError"


async def test_break_glass_keeps_local_accounts_beside_azure_ad(
    aiohttp_client: Any, data_dir: Path, oidc_provider: OidcProvider
) -> None:
    client = await aad_client(aiohttp_client, data_dir, oidc_provider, local_accounts=True)
    resp = await client.post("/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert resp.status == 200
    local = bearer((await resp.json())["access_token"])
    assert (await client.get("/services", headers=local)).status == 200
    token = oidc_provider.token("olga@contoso.example", groups=[OWNERS])
    assert (await client.get("/services", headers=bearer(token))).status == 200


async def test_an_owner_can_disable_an_azure_ad_user(
    aad: TestClient[Any, Any], oidc_provider: OidcProvider
) -> None:
    owner = bearer(oidc_provider.token("olga@contoso.example", groups=[OWNERS]))
    user = oidc_provider.token("dave@contoso.example", groups=[CONTRIBUTORS])
    assert (await aad.get("/services", headers=bearer(user))).status == 200
    resp = await aad.patch(
        "/admin/users/dave@contoso.example", headers=owner, json={"disabled": True}
    )
    assert resp.status == 200, await resp.text()
    assert (await aad.get("/services", headers=bearer(user))).status == 401
    # deleted, the account is recorded anew at its next use (enabled: a new account)
    resp = await aad.delete("/admin/users/dave@contoso.example", headers=owner)
    assert resp.status in (200, 204), await resp.text()
    assert (await aad.get("/services", headers=bearer(user))).status == 200


async def test_ending_an_azure_ad_users_logins_is_refused_saying_to_disable(
    aad: TestClient[Any, Any], oidc_provider: OidcProvider
) -> None:
    """Its tokens are the provider's: ending its logins here would answer 200 and change
    nothing (the token in hand goes on working), so the Owner is told what does work."""
    owner = bearer(oidc_provider.token("olga@contoso.example", groups=[OWNERS]))
    user = bearer(oidc_provider.token("erin@contoso.example", groups=[CONTRIBUTORS]))
    assert (await aad.get("/services", headers=user)).status == 200
    resp = await aad.patch(
        "/admin/users/erin@contoso.example", headers=owner, json={"endLogins": True}
    )
    assert resp.status == 409, await resp.text()
    assert "disable" in (await resp.json())["message"]
    assert (await aad.get("/services", headers=user)).status == 200
    resp = await aad.patch(
        "/admin/users/erin@contoso.example",
        headers=owner,
        json={"endLogins": True, "disabled": True},
    )
    assert resp.status == 200, await resp.text()
    assert (await aad.get("/services", headers=user)).status == 401


async def test_rotated_keys_are_fetched_and_status_reports_the_provider(
    aad: TestClient[Any, Any], oidc_provider: OidcProvider
) -> None:
    first = oidc_provider.token("olga@contoso.example", groups=[OWNERS])
    assert (await aad.get("/services", headers=bearer(first))).status == 200
    status = await (await aad.get("/status", headers=bearer(first))).json()
    assert status["components"]["directory"]["statusCode"] == "pass"

    oidc_provider.rotate()
    await asyncio.sleep(0.6)  # the test's JWKS cooldown
    second = oidc_provider.token("olga@contoso.example", groups=[OWNERS])
    assert (await aad.get("/services", headers=bearer(second))).status == 200

    oidc_provider.down()
    assert (await aad.get("/services", headers=bearer(second))).status == 200
    oidc_provider.rotate()
    await asyncio.sleep(0.6)
    third = oidc_provider.token("olga@contoso.example", groups=[OWNERS])
    assert (await aad.get("/services", headers=bearer(third))).status == 503
    status = await (await aad.get("/status", headers=bearer(second))).json()
    assert status["components"]["directory"]["statusCode"] in ("warn", "fail")


async def test_no_token_reaches_the_log(
    aad: TestClient[Any, Any], oidc_provider: OidcProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = oidc_provider.token("olga@contoso.example", groups=[OWNERS])
    signature = token.rsplit(".", 1)[1]
    assert (await aad.get("/services", headers=bearer(token))).status == 200
    assert (await aad.get("/services", headers=bearer(token + "x"))).status == 401
    assert signature not in caplog.text


async def test_microsofts_sdk_signs_in_with_a_token(
    aad: TestClient[Any, Any], oidc_provider: OidcProvider
) -> None:
    token = oidc_provider.token("olga@contoso.example", groups=[OWNERS])
    base = str(aad.make_url("/")).rstrip("/")

    def use_sdk() -> list[Any]:
        sdk = DeployClient(base, use=MLServer, auth=token)
        services: list[Any] = sdk.list_services()
        return services

    assert await asyncio.to_thread(use_sdk) == []
