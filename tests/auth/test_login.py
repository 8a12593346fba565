"""POST /login, refresh and revoke (API.md §3) against a running app."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from aiohttp.test_utils import TestClient
from jose import jwt

from controller.settings import Settings
from tests.conftest import ADMIN_PASSWORD, bearer, login


async def test_login_returns_an_ml_server_token_pair(client: TestClient[Any, Any]) -> None:
    body = await login(client)
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert isinstance(body["expires_on"], int) and body["expires_on"] > time.time() + 3500
    assert body["access_token"].count(".") == 2
    assert body["refresh_token"]
    resp = await client.get("/status", headers=bearer(body["access_token"]))
    assert resp.status == 200


async def test_wrong_password_and_unknown_user_get_the_same_401(
    client: TestClient[Any, Any],
) -> None:
    wrong = await client.post("/login", json={"username": "admin", "password": "nope-nope"})
    unknown = await client.post("/login", json={"username": "ghost", "password": "nope-nope"})
    assert wrong.status == unknown.status == 401
    wrong_body, unknown_body = await wrong.json(), await unknown.json()
    assert wrong_body["message"] == unknown_body["message"]
    assert wrong_body["exceptionType"] == "UnauthorizedError"
    assert "password" in wrong_body["message"]  # "user name or password", never which one


async def test_malformed_login_bodies_get_400_naming_the_problem(
    client: TestClient[Any, Any],
) -> None:
    resp = await client.post(
        "/login", data=b'{"username": "admin",', headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    assert "not valid JSON" in (await resp.json())["message"]
    resp = await client.post("/login", json={"username": "admin"})
    assert resp.status == 400
    body = await resp.json()
    assert "'password'" in body["message"] and body["exceptionType"] == "ValidationFailed"
    resp = await client.post("/login", json=["admin"])
    assert resp.status == 400
    assert "JSON object" in (await resp.json())["message"]
    resp = await client.post("/login", data=b"")
    assert resp.status == 400


async def test_login_field_names_match_case_insensitively(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/login", json={"UserName": "admin", "Password": ADMIN_PASSWORD})
    assert resp.status == 200


async def test_bad_bearer_tokens_get_401(client: TestClient[Any, Any], settings: Settings) -> None:
    good = (await login(client))["access_token"]
    header, payload, signature = good.split(".")
    secret = (settings.shared_dir / "jwt-secret").read_text().strip()
    claims = jwt.get_unverified_claims(good)
    cases = {
        "missing": {},
        "not bearer": {"Authorization": f"Basic {good}"},
        "garbage": bearer("not-a-token"),
        "tampered": bearer(f"{header}.{payload}.{signature[:-2]}AA"),
        "alg none": bearer(_alg_none(claims)),
        "HS512": bearer(jwt.encode(claims, secret, algorithm="HS512")),
        "other key": bearer(jwt.encode(claims, "x" * 48, algorithm="HS256")),
        "expired": bearer(jwt.encode({**claims, "iat": 1, "exp": 2}, secret, algorithm="HS256")),
        "no sub": bearer(
            jwt.encode({k: v for k, v in claims.items() if k != "sub"}, secret, algorithm="HS256")
        ),
        # JSON nested deeper than Python's recursion limit: RecursionError, not ValueError
        "nested header": bearer(f"{_b64(b'[' * 3000)}.{payload}.{signature}"),
    }
    for name, headers in cases.items():
        resp = await client.get("/status", headers=headers)
        assert resp.status == 401, name
        body = await resp.json()
        assert body["exceptionType"] == "UnauthorizedError", name
        assert body["message"], name


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _alg_none(claims: dict[str, Any]) -> str:
    import base64
    import json

    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


async def test_refresh_rotates_and_reuse_revokes_the_chain(client: TestClient[Any, Any]) -> None:
    first = await login(client)
    resp = await client.post("/login/refreshToken", json={"refreshToken": first["refresh_token"]})
    assert resp.status == 200
    second = await resp.json()
    assert second["refresh_token"] != first["refresh_token"]
    # the newer pair replaces the older one
    assert (await client.get("/status", headers=bearer(second["access_token"]))).status == 200
    assert (await client.get("/status", headers=bearer(first["access_token"]))).status == 401
    # presenting the dead token again is theft: the whole chain dies
    resp = await client.post("/login/refreshToken", json={"refreshToken": first["refresh_token"]})
    assert resp.status == 401
    resp = await client.post("/login/refreshToken", json={"refreshToken": second["refresh_token"]})
    assert resp.status == 401
    assert (await client.get("/status", headers=bearer(second["access_token"]))).status == 401


async def test_revoke_ends_the_pair_but_not_other_logins(client: TestClient[Any, Any]) -> None:
    pair = await login(client)
    other = await login(client)
    resp = await client.delete(
        "/login/refreshToken", params={"refreshToken": pair["refresh_token"]}
    )
    assert resp.status == 200
    assert (await client.get("/status", headers=bearer(pair["access_token"]))).status == 401
    resp = await client.post("/login/refreshToken", json={"refreshToken": pair["refresh_token"]})
    assert resp.status == 401
    assert (await client.get("/status", headers=bearer(other["access_token"]))).status == 200
    # revoking again, or something unknown, is a 401
    resp = await client.delete(
        "/login/refreshToken", params={"refreshToken": pair["refresh_token"]}
    )
    assert resp.status == 401
    resp = await client.delete("/login/refreshToken")
    assert resp.status == 400
    # the 9.1 path form works too
    third = await login(client)
    resp = await client.delete(f"/login/refreshToken/{third['refresh_token']}")
    assert resp.status == 200


async def test_repeated_failures_get_429_with_retry_after(client: TestClient[Any, Any]) -> None:
    for _ in range(5):
        resp = await client.post("/login", json={"username": "admin", "password": "wrong-wrong"})
        assert resp.status == 401
    resp = await client.post("/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) > 0
    assert (await resp.json())["exceptionType"] == "TooManyRequestsError"
    # another user is not locked out by admin's failures
    resp = await client.post("/login", json={"username": "someone", "password": "wrong-wrong"})
    assert resp.status == 401


async def test_concurrent_logins_do_not_block_each_other(client: TestClient[Any, Any]) -> None:
    results = await asyncio.gather(*(login(client) for _ in range(4)))
    assert len({r["refresh_token"] for r in results}) == 4


async def test_concurrent_guesses_are_throttled_too(client: TestClient[Any, Any]) -> None:
    guesses = [
        client.post("/login", json={"username": "admin", "password": f"guess-{i}"})
        for i in range(20)
    ]
    statuses = [resp.status for resp in await asyncio.gather(*guesses)]
    assert statuses.count(401) <= 5 and statuses.count(429) >= 15, statuses
