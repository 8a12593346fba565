"""Access tokens (JWT, HS256 via python-jose) and opaque refresh tokens.

Access tokens carry ``sub`` (user name), ``uid``, ``fam``/``gen`` (the refresh family and
generation they were issued with), ``iat`` and ``exp``. Decoding names the one allowed
algorithm and requires ``exp``, ``iat`` and ``sub``, so ``alg: none`` and algorithm
confusion fail. Verified tokens are cached until they expire: the consume path pays for
signature checking once per token, not once per request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from jose import ExpiredSignatureError, JWTError, jwt

from controller.errors import UnauthorizedError

ALGORITHM = "HS256"
ISSUER = "o16n"
_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: int
    username: str
    family: str
    generation: int
    expires_at: int


class AccessTokenCodec:
    def __init__(self, secret: str, ttl: int) -> None:
        if len(secret) < 32:
            raise ValueError("the JWT signing key must be at least 32 characters")
        self._secret = secret
        self.ttl = ttl
        self._cache: OrderedDict[str, AccessClaims] = OrderedDict()

    def sub_key(self, purpose: str) -> bytes:
        """A key for another signature of ours, derived from the signing key."""
        return hmac.new(self._secret.encode(), purpose.encode(), hashlib.sha256).digest()

    def issue(
        self, user_id: int, username: str, family: str, generation: int, now: float
    ) -> tuple[str, int]:
        issued = int(now)
        expires = issued + self.ttl
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": username,
            "uid": user_id,
            "fam": family,
            "gen": generation,
            "iat": issued,
            "exp": expires,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM), expires

    def is_ours(self, token: str) -> bool:
        """Whether ``token`` claims to be one of ours (HS256, no key id) rather than an
        identity provider's; only ``decode`` says whether it really is."""
        if token in self._cache:
            return True
        try:
            header = jwt.get_unverified_header(token)
        except JWTError:
            return True  # not a JWT at all: ``decode`` answers 401
        return header.get("alg") == ALGORITHM and "kid" not in header

    def decode(self, token: str) -> AccessClaims:
        """Verified claims of ``token``; 401 for anything not issued by us or expired."""
        cached = self._cache.get(token)
        if cached is not None:
            if cached.expires_at > time.time():
                return cached
            del self._cache[token]
            raise UnauthorizedError("the access token has expired; log in again")
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require_exp": True, "require_iat": True, "require_sub": True},
            )
            claims = AccessClaims(
                user_id=_int(payload["uid"]),
                username=str(payload["sub"]),
                family=str(payload["fam"]),
                generation=_int(payload["gen"]),
                expires_at=_int(payload["exp"]),
            )
        except ExpiredSignatureError:
            raise UnauthorizedError("the access token has expired; log in again") from None
        # RecursionError: python-jose parses the header's JSON before any check, and JSON
        # nested deeper than the interpreter's limit raises that, not ValueError
        except (JWTError, KeyError, TypeError, ValueError, RecursionError):
            raise UnauthorizedError("the access token is not valid") from None
        self._cache[token] = claims
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return claims


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("claim is not an integer")
    return value


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_family_id() -> str:
    return secrets.token_hex(16)
