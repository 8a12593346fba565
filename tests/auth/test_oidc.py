"""Azure AD access tokens verified against a real identity provider on 127.0.0.1.

The provider (``tests/oidc_provider.py``) mints with PyJWT, the verifier checks with
python-jose: neither library vouches for the other.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from controller.auth import appsettings
from controller.auth.oidc import OidcIdentity, OidcVerifier
from controller.errors import ForbiddenError, ServiceUnavailableError, UnauthorizedError
from controller.roles import Role
from controller.settings import Settings, SettingsError
from tests.oidc_provider import OidcProvider


@contextlib.asynccontextmanager
async def verifier(
    idp: OidcProvider, *, groups: frozenset[str] | None = None, **config: Any
) -> AsyncIterator[OidcVerifier]:
    started = OidcVerifier(idp.aad_config(**config), groups=groups)
    await started.start()
    try:
        yield started
    finally:
        await started.close()


async def rejected(v: OidcVerifier, token: str, error: type[Exception] = UnauthorizedError) -> str:
    """The message of the error ``token`` gets, checked not to echo the token."""
    with pytest.raises(error) as caught:
        await v.verify(token)
    message = str(caught.value)
    for part in token.split("."):
        assert len(part) < 8 or part not in message
    return message


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    """A JWT signed with HMAC-SHA256 under ``key`` (or unsigned): what no library makes."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = b"" if key is None else hmac.new(key, signing_input.encode(), "sha256").digest()
    return f"{signing_input}.{b64(signature)}"


# --- good tokens ----------------------------------------------------------------------------


async def test_a_good_rs256_token_verifies_with_its_groups_casefolded(
    oidc_provider: OidcProvider,
) -> None:
    groups = ["9A0F3C5E-1B2D-4E6F-8A7B-0C1D2E3F4A5B", "Data-Scientists"]
    token = oidc_provider.token("alice@contoso.example", groups=groups, display_name="Alice A.")
    claims = oidc_provider.claims("alice@contoso.example")
    async with verifier(oidc_provider) as v:
        identity = await v.verify(token)
    assert identity == OidcIdentity(
        subject=claims["oid"],
        username="alice@contoso.example",
        display_name="Alice A.",
        email=None,
        groups=frozenset({"9a0f3c5e-1b2d-4e6f-8a7b-0c1d2e3f4a5b", "data-scientists"}),
        expires_at=identity.expires_at,
    )
    assert time.time() + 3500 < identity.expires_at <= time.time() + 3600


async def test_a_good_es256_token_verifies(oidc_provider: OidcProvider) -> None:
    token = oidc_provider.token("bob@contoso.example", alg="ES256", groups=["G1"])
    async with verifier(oidc_provider) as v:
        identity = await v.verify(token)
    assert identity.username == "bob@contoso.example" and identity.groups == {"g1"}


async def test_the_user_name_falls_back_to_other_claims_and_the_subject(
    oidc_provider: OidcProvider,
) -> None:
    async with verifier(oidc_provider) as v:
        guest = await v.verify(
            oidc_provider.token("guest_fabrikam.example#EXT#", upn=None, email="g@fabrikam.ex")
        )
        bare = await v.verify(
            oidc_provider.token(upn=None, unique_name=None, oid=None, name=None, groups=None)
        )
    assert guest.username == "guest_fabrikam.example#EXT#" and guest.email == "g@fabrikam.ex"
    assert bare.subject == bare.username == oidc_provider.claims()["sub"]
    assert bare.display_name is None and bare.groups == frozenset()


async def test_only_the_groups_authorization_names_are_kept(
    oidc_provider: OidcProvider,
) -> None:
    """Azure AD puts up to 200 group ids in a token, and each verified token is cached
    (10,000 of them): ~25 KB each with all 200 kept, ~250 MB in all, for a user minting
    tokens. The roles depend only on the groups Authorization names, so only those stay."""
    many = [str(uuid.uuid4()).upper() for _ in range(199)] + ["Owners-Group"]
    async with verifier(oidc_provider, groups=frozenset({"owners-group", "readers"})) as v:
        identity = await v.verify(oidc_provider.token(groups=many))
        assert identity.groups == {"owners-group"}
        assert (await v.verify(oidc_provider.token(groups=many[:5]))).groups == frozenset()


# --- bad tokens: 401 naming the problem ------------------------------------------------------


async def test_an_expired_token_is_refused(oidc_provider: OidcProvider) -> None:
    async with verifier(oidc_provider, leeway=30) as v:
        message = await rejected(v, oidc_provider.token(lifetime=-60))
        assert "expired" in message
        await v.verify(oidc_provider.token(lifetime=-10))  # within the leeway


async def test_a_token_not_valid_yet_beyond_the_leeway_is_refused(
    oidc_provider: OidcProvider,
) -> None:
    async with verifier(oidc_provider, leeway=30) as v:
        message = await rejected(v, oidc_provider.token(not_before=time.time() + 120))
        assert "not valid yet (nbf)" in message
        await v.verify(oidc_provider.token(not_before=time.time() + 10))


async def test_a_token_for_another_audience_is_refused(oidc_provider: OidcProvider) -> None:
    async with verifier(oidc_provider) as v:
        message = await rejected(v, oidc_provider.token(audience="https://graph.windows.net"))
        assert "audience (aud)" in message
        message = await rejected(v, oidc_provider.token(aud=None))
        assert "no aud claim" in message


async def test_a_token_of_another_issuer_is_refused(oidc_provider: OidcProvider) -> None:
    other_tenant = f"https://sts.windows.net/{uuid.uuid4()}/"
    async with verifier(oidc_provider) as v:
        assert "issuer (iss)" in await rejected(v, oidc_provider.token(issuer=other_tenant))
        # the Authority is not the issuer: Azure AD's v1 tokens name sts.windows.net
        assert "issuer (iss)" in await rejected(
            v, oidc_provider.token(issuer=oidc_provider.authority)
        )


async def test_a_signature_by_an_unknown_key_under_a_known_kid_is_refused(
    oidc_provider: OidcProvider,
) -> None:
    async with verifier(oidc_provider) as v:
        await v.verify(oidc_provider.token())
        assert "signature does not verify" in await rejected(v, oidc_provider.token(forged=True))
        assert "signature does not verify" in await rejected(
            v, oidc_provider.token(alg="ES256", forged=True)
        )
        # a key of the right type under another curve: the JWKS's P-256 key does not fit
        assert "does not fit" in await rejected(v, oidc_provider.token(alg="ES384"))


async def test_hs256_signed_with_the_public_key_is_refused(oidc_provider: OidcProvider) -> None:
    """Algorithm confusion: the public key (PEM, or the JWK) used as an HMAC secret."""
    claims = oidc_provider.claims()
    header = {"alg": "HS256", "typ": "JWT", "kid": oidc_provider.kid()}
    jwk_text = json.dumps(oidc_provider.jwks()["keys"][-1]).encode()
    async with verifier(oidc_provider) as v:
        for secret in (oidc_provider.public_pem(), jwk_text):
            message = await rejected(v, handmade(header, claims, secret))
            assert "algorithm is not allowed" in message


async def test_alg_none_is_refused(oidc_provider: OidcProvider) -> None:
    claims = oidc_provider.claims()
    async with verifier(oidc_provider) as v:
        for alg in ("none", "None", "NONE"):
            token = handmade({"alg": alg, "kid": oidc_provider.kid()}, claims, None)
            assert "algorithm is not allowed" in await rejected(v, token)
        # an allowed alg in the header with no signature at all
        token = handmade({"alg": "RS256", "kid": oidc_provider.kid()}, claims, None)
        assert "signature does not verify" in await rejected(v, token)


async def test_garbage_is_refused(oidc_provider: OidcProvider) -> None:
    good = oidc_provider.token()
    head, body, signature = good.split(".")
    async with verifier(oidc_provider) as v:
        for token in (
            "",
            "garbage",
            "a.b.c",
            "e30.e30.",
            f"{head}.{body}",
            f"{head}.{body[:-4]}.{signature}",
            f"{head}.{b64(b'[1, 2]')}.{signature}",
            f"{b64(b'not json')}.{body}.{signature}",
            f"{head}.{body}.{signature}" + "A" * 70_000,
            "\udcff.\x00.é",
        ):
            assert "access token" in await rejected(v, token)
        crit = oidc_provider.token(headers={"crit": ["exp"]})
        assert "critical header" in await rejected(v, crit)
        assert "kid" in await rejected(v, oidc_provider.token(kid="k" * 300))
        assert (await v.verify(good)).username  # the good one still verifies


# --- group overage: 403 saying so --------------------------------------------------------------


async def test_a_group_overage_claim_gets_403_saying_what_to_do(
    oidc_provider: OidcProvider,
) -> None:
    async with verifier(oidc_provider) as v:
        for overage in (True, "hasgroups"):
            message = await rejected(v, oidc_provider.token(overage=overage), ForbiddenError)
            assert "group-overage" in message and "fewer groups" in message
            assert "groupMembershipClaims" in message
        # a forged overage token is a 401, not a 403: the signature comes first
        await rejected(v, oidc_provider.token(overage=True, forged=True))


# --- keys rotate --------------------------------------------------------------------------------


async def test_a_new_kid_after_rotation_costs_exactly_one_jwks_fetch(
    oidc_provider: OidcProvider,
) -> None:
    old = oidc_provider.token()
    async with verifier(oidc_provider, jwks_cooldown=0) as v:
        await v.verify(old)
        assert oidc_provider.jwks_fetches == 1
        oidc_provider.rotate()
        oidc_provider.delay = 0.2  # the requests below overlap the fetch
        news = [oidc_provider.token(f"user{i}@contoso.example") for i in range(20)]
        identities = await asyncio.gather(*(v.verify(t) for t in news))
        assert [i.username for i in identities] == [f"user{i}@contoso.example" for i in range(20)]
        assert oidc_provider.jwks_fetches == 2
        assert oidc_provider.discovery_fetches == 1  # the JWKS alone is fetched again
        # the old key left the JWKS: its token, though verified before, is not good any more
        assert "unknown kid" in await rejected(v, old)


async def test_a_flood_of_unknown_kids_fetches_at_most_once_per_cooldown(
    oidc_provider: OidcProvider,
) -> None:
    cooldown = 0.5
    async with verifier(oidc_provider, jwks_cooldown=cooldown) as v:
        await v.verify(oidc_provider.token())
        before = oidc_provider.jwks_fetches
        began = time.monotonic()
        while time.monotonic() - began < 1.2:
            flood = [oidc_provider.token(kid=uuid.uuid4().hex) for _ in range(20)]
            results = await asyncio.gather(*(v.verify(t) for t in flood), return_exceptions=True)
            assert all(isinstance(r, UnauthorizedError) for r in results)
            assert all("unknown kid" in str(r) for r in results)
        elapsed = time.monotonic() - began
    refetches = oidc_provider.jwks_fetches - before
    assert 1 <= refetches <= int(elapsed / cooldown) + 1


# --- the provider down ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["refuse", "503"])
async def test_held_keys_keep_working_while_the_provider_is_down(
    oidc_provider: OidcProvider, mode: Any
) -> None:
    async with verifier(oidc_provider, jwks_cooldown=0) as v:
        await v.verify(oidc_provider.token())
        assert v.status()["status"] == "ok"
        oidc_provider.down(mode)
        oidc_provider.rotate("EC")  # a new key nobody could fetch
        # a token never seen, signed with a key fetched before: verified
        assert (await v.verify(oidc_provider.token("carol@contoso.example"))).username
        message = await rejected(v, oidc_provider.token(alg="ES256"), ServiceUnavailableError)
        assert "cannot be reached" in message
        status = v.status()
        assert status["status"] == "warn" and status["keys"] == 2
        assert "still verify" in str(status["detail"])
        # the RSA key survived the failed fetch
        assert (await v.verify(oidc_provider.token("dave@contoso.example"))).username
        oidc_provider.up()
        assert (await v.verify(oidc_provider.token(alg="ES256"))).username
        assert v.status()["status"] == "ok"


async def test_no_keys_and_the_provider_down_is_503_and_fail(
    oidc_provider: OidcProvider,
) -> None:
    token = oidc_provider.token()
    oidc_provider.down()
    async with verifier(oidc_provider, jwks_cooldown=0) as v:
        await rejected(v, token, ServiceUnavailableError)
        status = v.status()
        assert status["status"] == "fail" and status["keys"] == 0
        assert "ClientConnectorError" in str(status["detail"])
        oidc_provider.up()
        assert (await v.verify(token)).username == "alice@contoso.example"


@pytest.mark.parametrize("declare_length", [False, True])
async def test_a_huge_jwks_is_refused_without_reading_it_all(
    oidc_provider: OidcProvider, declare_length: bool
) -> None:
    size = 512 << 20
    oidc_provider.serve_huge_jwks(size, declare_length=declare_length)
    async with verifier(oidc_provider, jwks_cooldown=0) as v:
        await rejected(v, oidc_provider.token(), ServiceUnavailableError)
        assert "larger than 1048576 bytes" in str(v.status()["detail"])
    assert oidc_provider.huge_bytes_sent() < 32 << 20  # what the socket buffers took


async def test_a_jwks_nested_too_deep_is_a_provider_error_not_a_crash(
    oidc_provider: OidcProvider,
) -> None:
    """JSON nested past the recursion limit raises RecursionError, not ValueError: it is
    the provider answering nonsense (503, ``fail``), and the keys held stay."""
    oidc_provider.jwks_raw = b'{"keys": ' + b"[" * 100_000
    async with verifier(oidc_provider, jwks_cooldown=0) as v:
        await rejected(v, oidc_provider.token(), ServiceUnavailableError)
        status = v.status()
        assert status["status"] == "fail" and "JWKS is not JSON" in str(status["detail"])
        oidc_provider.jwks_raw = None
        assert (await v.verify(oidc_provider.token())).username
        oidc_provider.jwks_raw = b"[" * 100_000
        await rejected(v, oidc_provider.token(kid="another"), ServiceUnavailableError)
        assert v.status()["status"] == "warn" and v.status()["keys"] == 2


# --- verified tokens are cached -----------------------------------------------------------


async def test_a_verified_token_is_cached_until_it_expires(oidc_provider: OidcProvider) -> None:
    tokens = [oidc_provider.token(f"u{i}@contoso.example") for i in range(50)]
    async with verifier(oidc_provider) as v:
        await v.verify(oidc_provider.token())  # the keys are fetched
        first, later = [], []
        for token in tokens:
            began = time.perf_counter()
            identity = await v.verify(token)
            first.append(time.perf_counter() - began)
            began = time.perf_counter()
            assert await v.verify(token) == identity
            later.append(time.perf_counter() - began)
    first.sort()
    later.sort()
    print(f"verify p50: first {first[25] * 1e6:.0f} µs, later {later[25] * 1e6:.1f} µs")
    assert later[25] * 5 < first[25]
    assert oidc_provider.jwks_fetches == 1
    digest = hashlib.sha256(tokens[0].encode()).digest()
    assert digest in v._cache  # keyed by the token's hash, not the token


# --- what the provider publishes ------------------------------------------------------------


async def test_keys_unfit_for_signatures_are_skipped(oidc_provider: OidcProvider) -> None:
    real = oidc_provider.jwks()["keys"]
    rsa_key = next(k for k in real if k["kty"] == "RSA")
    short_n = b64((1 << 1023 | 1).to_bytes(128, "big"))
    oidc_provider.jwks_override = {
        "keys": [
            *real,
            {**rsa_key, "kid": "enc", "use": "enc"},
            {**rsa_key, "kid": "ops", "key_ops": ["encrypt"]},
            {**rsa_key, "kid": "hs", "alg": "HS256"},
            {**rsa_key, "kid": "short", "n": short_n},
            {**rsa_key, "kid": "private", "d": "AQAB"},
            {"kty": "oct", "kid": "oct", "k": b64(oidc_provider.public_pem())},
            {"kty": "EC", "kid": "curve", "crv": "secp256k1", "x": "AA", "y": "AA"},
            {"kty": "EC", "kid": "crv-list", "crv": ["P-256"], "x": "AA", "y": "AA"},
            {**rsa_key, "kid": "alg-list", "alg": ["RS256"]},
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            "not a key",
        ]
    }
    async with verifier(oidc_provider, jwks_cooldown=300) as v:
        assert (await v.verify(oidc_provider.token())).username
        assert v.status()["keys"] == 2
        unfit = ("enc", "ops", "hs", "short", "private", "oct", "curve", "crv-list", "alg-list")
        for kid in (*unfit, "broken"):
            assert "unknown kid" in await rejected(v, oidc_provider.token(kid=kid))


async def test_a_multi_tenant_authority_is_refused_saying_why(
    oidc_provider: OidcProvider,
) -> None:
    token = oidc_provider.token()
    oidc_provider.issuer = "https://sts.windows.net/{tenantid}/"
    async with verifier(oidc_provider) as v:
        await rejected(v, token, ServiceUnavailableError)
        status = v.status()
    assert status["status"] == "fail" and "name your tenant in Authority" in str(status["detail"])


async def test_an_https_provider_is_trusted_through_the_ca_file() -> None:
    with OidcProvider(tls=True) as idp:
        assert idp.authority.startswith("https://127.0.0.1:")
        async with verifier(idp) as v:
            assert (await v.verify(idp.token())).username == "alice@contoso.example"
        # without its CA file the provider's certificate is not trusted: no keys
        untrusted = OidcVerifier(dataclasses.replace(idp.aad_config(), ca_file=None))
        await untrusted.start()
        try:
            await rejected(untrusted, idp.token(), ServiceUnavailableError)
            assert "Certificate" in str(untrusted.status()["detail"])
        finally:
            await untrusted.close()
        missing = idp.aad_config().ca_file.parent / "nowhere.pem"  # type: ignore[union-attr]
        with pytest.raises(SettingsError, match="O16N_OIDC_CA_FILE"):
            await OidcVerifier(dataclasses.replace(idp.aad_config(), ca_file=missing)).start()


@pytest.mark.parametrize("jwks_uri", ["https://[o16n", "http://example.com/keys", 42])
async def test_a_discovery_document_without_a_usable_jwks_uri_is_the_providers_error(
    oidc_provider: OidcProvider, jwks_uri: object
) -> None:
    """Not https (http only on loopback), not a URL at all: nothing is fetched from it, the
    token gets a 503 and /status says why (no exception escapes the fetch)."""
    oidc_provider.discovery_override = {"jwks_uri": jwks_uri}
    async with verifier(oidc_provider, jwks_cooldown=0) as v:
        await rejected(v, oidc_provider.token(), ServiceUnavailableError)
        status = v.status()
    assert status["status"] == "fail" and "no https jwks_uri" in str(status["detail"])
    assert oidc_provider.jwks_fetches == 0


def test_the_providers_appsettings_read_as_its_aad_config(
    oidc_provider: OidcProvider, settings: Settings
) -> None:
    """The helper other tests write to O16N_APPSETTINGS means what ``aad_config`` says."""
    group = "9a0f3c5e-1b2d-4e6f-8a7b-0c1d2e3f4a5b"
    loaded = appsettings.parse(oidc_provider.appsettings(owner=[group.upper()]), settings)
    assert loaded.aad == oidc_provider.aad_config(
        jwks_cooldown=settings.oidc_jwks_cooldown, leeway=settings.oidc_leeway
    )
    assert loaded.source == "aad" and not loaded.local_accounts
    assert loaded.roles.role_for([group]) == Role.OWNER
    assert loaded.roles.role_for(["another"]) == Role.CONTRIBUTOR


async def test_no_token_reaches_the_log(
    oidc_provider: OidcProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = [oidc_provider.token(), oidc_provider.token(forged=True), oidc_provider.token()]
    async with verifier(oidc_provider, jwks_cooldown=0) as v:
        await v.verify(tokens[0])
        await rejected(v, tokens[1])
        oidc_provider.down()
        await rejected(v, oidc_provider.token(kid="another"), ServiceUnavailableError)
        await v.verify(tokens[2])
    assert any("ClientConnectorError" in r.getMessage() for r in caplog.records)
    for token in tokens:
        for part in token.split("."):
            assert part not in caplog.text
