"""Azure AD (any OpenID Connect provider's) access tokens, verified as bearer tokens.

Microsoft's SDK sends the identity provider's access token as the bearer token
(``auth="<token>"`` or an ADAL dict). A token is good when its signature verifies against
a key of the JWKS that the Authority's discovery document names (``jwks_uri``), with an
algorithm of the allow-list (RSA and ECDSA only: never ``HS*`` or ``none``, so a public key
cannot be used as an HMAC secret), and when its ``iss`` is the discovery document's
``issuer``, its ``aud`` the configured ``Audience`` and ``exp``/``nbf`` hold within the
leeway. The header's ``jku``/``x5u``/``jwk`` are never followed: keys come only from the
provider's JWKS.

Keys rotate: a ``kid`` not held causes one JWKS fetch, at most one per cooldown
(``O16N_OIDC_JWKS_COOLDOWN``) however many requests ask, and concurrent requests share
it. A failed fetch never drops the keys held, so tokens signed with them keep working
while the provider is down; a token whose key is unknown then gets a 503, not a 401. A
background task refreshes discovery and keys daily (and retries after a failure). What is
read from the provider is bounded (size, time).

Verified tokens are cached (by a hash of the token) until they expire, so a client's later
requests cost a hash and a dictionary look-up, not a signature check.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import math
import re
import ssl
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from jose import ExpiredSignatureError, JWTError, jwk, jwt
from jose.exceptions import JOSEError, JWTClaimsError

from controller.auth.appsettings import AadConfig
from controller.errors import ForbiddenError, ServiceUnavailableError, UnauthorizedError
from controller.metrics.definitions import count_login, login_refusals
from controller.settings import SettingsError

log = logging.getLogger(__name__)

#: Asymmetric algorithms only: a symmetric one would let a public key act as a secret.
ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512")
_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_DEFAULT_ALG = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_MIN_RSA_BITS = 2048
#: Azure AD's tokens with many claims stay well below this.
_MAX_TOKEN = 64 * 1024
#: the source of these sign-ins in ``o16n_logins_total`` (``oidc_login.SOURCE``)
SOURCE = "aad"
_MAX_KID = 256
_MAX_KEYS = 256
_CACHE_SIZE = 10_000
_MISSING_CLAIM = re.compile(r'missing required key "(\w+)"')


@dataclass(frozen=True, slots=True)
class OidcIdentity:
    """Who a verified access token names."""

    #: the ``oid`` claim (Azure AD's object id of the user), else ``sub``
    subject: str
    #: ``upn``, else ``preferred_username``, ``unique_name``, ``email``, else the subject
    username: str
    display_name: str | None
    email: str | None
    #: the ``groups`` claim's values (Azure AD: object ids), casefolded; only those
    #: ``Authorization`` names when the verifier is told them
    groups: frozenset[str]
    #: the token's ``exp``
    expires_at: float


class _ProviderError(Exception):
    """The provider could not be asked, or answered nonsense; the message says which."""


@dataclass(slots=True)
class _Key:
    """One signing key of the JWKS, and the verifier python-jose made of it per algorithm."""

    kty: str
    alg: str | None
    crv: str | None
    data: dict[str, Any]
    made: dict[str, Any] = field(default_factory=dict)

    def for_alg(self, alg: str) -> Any:
        fits = (
            (self.kty == "RSA" and alg.startswith("RS"))
            or (self.kty == "EC" and _CURVES.get(alg) == self.crv)
        ) and self.alg in (None, alg)
        if not fits:
            raise UnauthorizedError(
                "the access token's algorithm does not fit the key it names (kid)"
            )
        made = self.made.get(alg)
        if made is None:
            made = self.made[alg] = jwk.construct(self.data, alg)
        return made


class OidcVerifier:
    """Verifies the provider's access tokens; ``start`` before use, ``close`` at shutdown."""

    #: bytes read at most from each answer of the provider
    max_document = 1 << 20
    #: seconds for each request to the provider
    timeout = 10.0
    #: seconds between two background refreshes of discovery and keys
    refresh_every = 24 * 3600.0
    #: seconds before the background task tries again after a failed refresh (at least
    #: the cooldown)
    retry_every = 60.0

    def __init__(self, config: AadConfig, *, groups: frozenset[str] | None = None) -> None:
        """``groups``: the only ones (casefolded) kept of a token's ``groups`` claim, the
        ones ``Authorization`` names (roles depend on no other); ``None``: all of them."""
        self._config = config
        self._groups = groups
        self._session: aiohttp.ClientSession | None = None
        self._background: asyncio.Task[None] | None = None
        self._inflight: asyncio.Task[None] | None = None
        self._issuer: str | None = None
        self._jwks_uri: str | None = None
        self._keys: dict[str, _Key] = {}
        #: why the last fetch failed; ``None`` after a good one (or before any)
        self._error: str | None = None
        self._last_attempt = -math.inf
        self._cache: OrderedDict[bytes, tuple[OidcIdentity, str]] = OrderedDict()

    # --- life -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Make the HTTP client and fetch discovery and keys in the background: a provider
        down at start delays nothing (tokens then get 503 until it answers)."""
        ssl_context: ssl.SSLContext | bool = True
        if self._config.ca_file is not None:
            try:
                ssl_context = ssl.create_default_context(cafile=str(self._config.ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise SettingsError(
                    f"O16N_OIDC_CA_FILE: cannot read CA certificates from "
                    f"{self._config.ca_file}: {exc}"
                ) from None
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_context, limit=4),
            timeout=aiohttp.ClientTimeout(total=self.timeout, connect=self.timeout),
            trust_env=False,
        )
        self._background = asyncio.create_task(self._refresh_now_and_then(), name="oidc-keys")

    async def close(self) -> None:
        for task in (self._background, self._inflight):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._background = self._inflight = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def status(self) -> dict[str, object]:
        """For ``/status``: ``ok`` with keys and a good last fetch, ``warn`` with keys while
        the provider cannot be reached (they still verify), ``fail`` with neither."""
        held = len(self._keys)
        if held and self._error is None:
            return {
                "status": "ok",
                "detail": f"{held} signing key(s) from the identity provider",
                "keys": held,
            }
        if held:
            return {
                "status": "warn",
                "detail": f"the identity provider's keys cannot be fetched now: {self._error}; "
                f"the {held} signing key(s) fetched before still verify tokens",
                "keys": held,
            }
        if self._error is not None:
            return {
                "status": "fail",
                "detail": f"no signing keys: the identity provider's keys cannot be fetched: "
                f"{self._error}; Azure AD sign-ins fail until they are",
                "keys": 0,
            }
        return {"status": "warn", "detail": "fetching the identity provider's keys", "keys": 0}

    # --- verification -----------------------------------------------------------------------

    async def verify(self, token: str) -> OidcIdentity:
        """The identity ``token`` names; 401 for any token that is not good, 403 for one
        whose groups Azure AD left out (overage), 503 when its key cannot be fetched."""
        identity, _ = await self.verify_new(token)
        return identity

    async def verify_new(self, token: str) -> tuple[OidcIdentity, bool]:
        """``verify``, and whether the token was new (not verified before): its first use is
        the sign-in of ``o16n_logins_total``, counted by the caller, which knows whether it
        admits the user. A token refused here is counted here, at each use."""
        if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN:
            count_login(SOURCE, "failure")
            raise UnauthorizedError("the access token is not a valid JWT")
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        cached = self._cache.get(digest)
        if cached is not None:
            identity, held = cached
            if identity.expires_at + self._config.leeway > time.time() and held in self._keys:
                self._cache.move_to_end(digest)
                return identity, False
            del self._cache[digest]
        with login_refusals(SOURCE):
            alg, kid = _read_header(token)
            held, key = await self._key(kid)
            identity = self._decode(token, key.for_alg(alg), alg)
        if self._groups is not None:  # up to 200 ids a token, 10,000 tokens cached
            identity = replace(identity, groups=identity.groups & self._groups)
        self._cache[digest] = (identity, held)
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return identity, True

    async def _key(self, kid: str | None) -> tuple[str, _Key]:
        found = self._find(kid)
        if found is None:
            await self._fetch_for_unknown_kid()
            found = self._find(kid)
        if found is not None:
            return found
        if self._error is not None:
            raise ServiceUnavailableError(
                "the identity provider cannot be reached to fetch the key this access token "
                "is signed with; try again shortly",
                retry_after=max(self._config.jwks_cooldown, 1.0),
            )
        if kid is None:
            raise UnauthorizedError("the access token names no signing key (kid)")
        raise UnauthorizedError(
            "the access token is signed with a key the identity provider does not publish "
            "(unknown kid)"
        )

    def _find(self, kid: str | None) -> tuple[str, _Key] | None:
        if kid is None:
            # Providers with one key may leave ``kid`` out; then there is no choice to make.
            return next(iter(self._keys.items())) if len(self._keys) == 1 else None
        key = self._keys.get(kid)
        return None if key is None else (kid, key)

    def _decode(self, token: str, key: Any, alg: str) -> OidcIdentity:
        assert self._issuer is not None  # keys are only held after discovery
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._config.audience,
                issuer=self._issuer,
                options={
                    "leeway": self._config.leeway,
                    "require_exp": True,
                    "require_aud": True,
                    "require_iss": True,
                    "verify_nbf": True,
                    "verify_at_hash": False,
                },
            )
        except ExpiredSignatureError:
            raise UnauthorizedError(
                "the access token has expired; get a new one from the identity provider"
            ) from None
        except JWTClaimsError as exc:
            raise UnauthorizedError(_claims_problem(str(exc))) from None
        except (JOSEError, TypeError, ValueError) as exc:
            text = str(exc)
            missing = _MISSING_CLAIM.search(text)
            if missing:
                message = f"the access token has no {missing.group(1)} claim"
            elif "Signature verification failed" in text:
                message = "the access token's signature does not verify"
            else:
                message = "the access token is not a valid JWT"
            raise UnauthorizedError(message) from None
        return _identity(claims)

    # --- the provider's keys ----------------------------------------------------------------

    async def _fetch_for_unknown_kid(self) -> None:
        """One JWKS fetch that every request asking now shares, at most one per cooldown."""
        if self._inflight is None:
            if time.monotonic() - self._last_attempt < self._config.jwks_cooldown:
                return
            self._start_refresh(discovery=self._jwks_uri is None)
        assert self._inflight is not None
        await asyncio.shield(self._inflight)

    def _start_refresh(self, *, discovery: bool) -> asyncio.Task[None]:
        if self._inflight is None:
            self._last_attempt = time.monotonic()
            task = asyncio.create_task(self._refresh(discovery=discovery), name="oidc-fetch")
            self._inflight = task
            task.add_done_callback(self._refreshed)
        return self._inflight

    def _refreshed(self, task: asyncio.Task[None]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _refresh_now_and_then(self) -> None:
        while True:
            try:
                await asyncio.shield(self._start_refresh(discovery=True))
            except Exception:  # a bug must not end the refreshes
                log.exception("identity provider: refreshing its keys failed")
            if self._error is None:
                await asyncio.sleep(self.refresh_every)
            else:
                await asyncio.sleep(max(self.retry_every, self._config.jwks_cooldown))

    async def _refresh(self, *, discovery: bool) -> None:
        """Fetch (discovery and) the JWKS; on failure keep every key held, note why."""
        try:
            if discovery or self._jwks_uri is None:
                document = await self._get_json(self._config.discovery_url, "discovery document")
                self._issuer, self._jwks_uri = _read_discovery(document)
            keys = _read_jwks(await self._get_json(self._jwks_uri, "JWKS"))
        except _ProviderError as exc:
            self._error = str(exc)
            log.warning(
                "identity provider: %s; %d signing key(s) held are kept", exc, len(self._keys)
            )
            return
        if self._error is not None:
            log.info("identity provider: reachable again, %d signing key(s)", len(keys))
        self._keys = keys
        self._error = None

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        """``url``'s JSON object, read up to ``max_document`` bytes (more is refused)."""
        if self._session is None:
            raise RuntimeError("OidcVerifier.start() was not called")
        limit = self.max_document
        body = bytearray()
        try:
            async with self._session.get(url, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise _ProviderError(f"its {what} answered HTTP {resp.status}")
                if resp.content_length is not None and resp.content_length > limit:
                    resp.close()
                    raise _ProviderError(f"its {what} is larger than {limit} bytes")
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > limit:
                        resp.close()
                        raise _ProviderError(f"its {what} is larger than {limit} bytes")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _ProviderError(f"fetching its {what} failed: {type(exc).__name__}") from None
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):  # nested past the limit
            raise _ProviderError(f"its {what} is not JSON") from None
        if not isinstance(document, dict):
            raise _ProviderError(f"its {what} is not a JSON object")
        return document


# --- reading what the token and the provider say --------------------------------------------


def _read_header(token: str) -> tuple[str, str | None]:
    """The token's algorithm (from the allow-list) and key id, read before any check."""
    try:
        header = jwt.get_unverified_header(token)
    except (JWTError, TypeError, ValueError):
        raise UnauthorizedError("the access token is not a valid JWT") from None
    if not isinstance(header, dict):
        raise UnauthorizedError("the access token is not a valid JWT")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
        raise UnauthorizedError(
            "the access token's algorithm is not allowed (only "
            + ", ".join(ALLOWED_ALGORITHMS)
            + ")"
        )
    if "crit" in header:
        raise UnauthorizedError("the access token has critical header parameters (crit)")
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or len(kid) > _MAX_KID):
        raise UnauthorizedError("the access token's key id (kid) is not valid")
    return alg, kid


def _claims_problem(text: str) -> str:
    if "audience" in text:
        return "the access token is for another audience (aud) than this server's"
    if "issuer" in text:
        return "the access token was issued by another issuer (iss) than the Authority's"
    if "claim format" in text:  # python-jose says so of ``aud`` only
        return "the access token's aud claim is not a string or a list of strings"
    if "nbf" in text or "Not Before" in text:
        return "the access token is not valid yet (nbf)"
    return "the access token's claims are not valid"


def _identity(claims: dict[str, Any]) -> OidcIdentity:
    names = claims.get("_claim_names")
    overage = isinstance(names, dict) and "groups" in names
    if overage or claims.get("hasgroups") in (True, "true", "True"):
        raise ForbiddenError(
            "the access token carries a group-overage claim instead of the groups claim: the "
            "user is in more groups than Azure AD puts in a token, so no role can be given. "
            "Assign the user to fewer groups, or have the app registration emit only the "
            'groups assigned to the application (groupMembershipClaims "ApplicationGroup", '
            "Token configuration > Groups claim)"
        )
    subject = _text(claims, "oid") or _text(claims, "sub")
    if subject is None:
        raise UnauthorizedError("the access token names no user (no oid or sub claim)")
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise UnauthorizedError("the access token's exp claim is not a number")
    groups = claims.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise UnauthorizedError("the access token's groups claim is not a list of names")
    username = (
        _text(claims, "upn")
        or _text(claims, "preferred_username")
        or _text(claims, "unique_name")
        or _text(claims, "email")
        or subject
    )
    return OidcIdentity(
        subject=subject,
        username=username,
        display_name=_text(claims, "name"),
        email=_text(claims, "email"),
        groups=frozenset(g.casefold() for g in groups),
        expires_at=float(exp),
    )


def _text(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value if isinstance(value, str) and value.strip() else None


def _read_discovery(document: dict[str, Any]) -> tuple[str, str]:
    issuer = document.get("issuer")
    jwks_uri = document.get("jwks_uri")
    if not isinstance(issuer, str) or not issuer:
        raise _ProviderError("its discovery document has no issuer")
    if "{tenantid}" in issuer:
        # ``common``/``organizations``: any tenant's tokens would do; ML Server names one.
        raise _ProviderError(
            "the Authority is multi-tenant (its issuer is a {tenantid} template); name your "
            "tenant in Authority, e.g. https://login.microsoftonline.com/<tenant id>"
        )
    if not isinstance(jwks_uri, str) or not _fetchable(jwks_uri):
        raise _ProviderError("its discovery document has no https jwks_uri")
    return issuer, jwks_uri


def _fetchable(url: str) -> bool:
    try:
        parts = urlsplit(url)
        loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
    except ValueError:  # e.g. "https://[": not a URL
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and loopback)


def _read_jwks(document: dict[str, Any]) -> dict[str, _Key]:
    """The usable signing keys (by ``kid``; ``""`` for none); others are skipped."""
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise _ProviderError("its JWKS has no keys list")
    keys: dict[str, _Key] = {}
    for entry in entries[:_MAX_KEYS]:
        key = _read_jwk(entry)
        if key is not None:
            kid = entry.get("kid")
            keys[kid if isinstance(kid, str) else ""] = key
    if not keys:
        raise _ProviderError("its JWKS holds no usable signing key")
    return keys


def _read_jwk(entry: object) -> _Key | None:
    if not isinstance(entry, dict):
        return None
    kty, alg, crv = entry.get("kty"), entry.get("alg"), entry.get("crv")
    ops = entry.get("key_ops")
    if (
        kty not in ("RSA", "EC")
        or entry.get("use") not in (None, "sig")
        or (ops is not None and (not isinstance(ops, list) or "verify" not in ops))
        or (alg is not None and alg not in ALLOWED_ALGORITHMS)
        or any(k in entry for k in ("d", "p", "q", "k"))  # private material: not a JWKS
    ):
        return None
    if kty == "RSA":
        if _rsa_bits(entry.get("n")) < _MIN_RSA_BITS:
            return None
        default_alg = "RS256"
    else:
        if not isinstance(crv, str) or crv not in _DEFAULT_ALG:  # a list cannot be looked up
            return None
        default_alg = _DEFAULT_ALG[crv]
    if alg is not None and alg[:2] != default_alg[:2]:
        return None
    key = _Key(kty=kty, alg=alg, crv=crv if kty == "EC" else None, data=dict(entry))
    try:
        key.for_alg(alg or default_alg)
    except Exception:  # whatever the provider's JWK made the crypto library say: unusable
        log.warning("identity provider: a key of its JWKS is not usable; skipped")
        return None
    return key


def _rsa_bits(n: object) -> int:
    if not isinstance(n, str):
        return 0
    try:
        raw = base64.urlsafe_b64decode(n + "=" * (-len(n) % 4))
    except ValueError:
        return 0
    return int.from_bytes(raw, "big").bit_length()
