"""Login, refresh and revoke: the token lifecycle of API.md §3."""

from __future__ import annotations

import time
from dataclasses import dataclass

from controller.auth.directory import Directory
from controller.auth.jwt_tokens import (
    AccessTokenCodec,
    hash_refresh_token,
    new_family_id,
    new_refresh_token,
)
from controller.auth.passwords import dummy_hash, verify_password_async
from controller.auth.roles import Identity
from controller.auth.throttle import LoginThrottle
from controller.errors import UnauthorizedError
from controller.settings import Settings
from controller.store.tokens import FamilyState, RotateOutcome

_BAD_CREDENTIALS = "the user name or password is incorrect"
_BAD_REFRESH = "the refresh token is not valid, has expired or was revoked; log in again"


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    expires_in: int
    expires_on: int
    refresh_token: str

    def to_json(self) -> dict[str, object]:
        return {
            "token_type": "Bearer",
            "access_token": self.access_token,
            "expires_in": self.expires_in,
            "expires_on": self.expires_on,
            "refresh_token": self.refresh_token,
        }


class AuthService:
    def __init__(self, settings: Settings, directory: Directory, codec: AccessTokenCodec) -> None:
        self._settings = settings
        self._directory = directory
        self._codec = codec
        self._throttle = LoginThrottle(
            settings.login_max_failures,
            settings.login_max_failures_per_address,
            settings.login_failure_window,
        )
        self._dummy_hash = dummy_hash()

    async def login(self, username: str, password: str, address: str) -> TokenPair:
        self._throttle.begin(username, address)
        try:
            user = await self._directory.users_repo.by_name(username)
            # Unknown users are checked against a dummy hash: same answer, same time.
            hashed = user.password_hash if user else self._dummy_hash
            ok = await verify_password_async(hashed, password)
        finally:
            self._throttle.end(username, address)
        if user is None or not ok or user.disabled:
            self._throttle.failed(username, address)
            raise UnauthorizedError(_BAD_CREDENTIALS)
        self._throttle.succeeded(username)
        self._directory.put_user(user)
        now = time.time()
        refresh = new_refresh_token()
        family = await self._directory.tokens_repo.start_family(
            new_family_id(),
            user.id,
            hash_refresh_token(refresh),
            now,
            now + min(self._settings.refresh_token_idle_ttl, self._settings.refresh_chain_max_age),
        )
        return self._pair(family, user.username, refresh, now)

    async def refresh(self, refresh_token: str) -> TokenPair:
        now = time.time()
        new_refresh = new_refresh_token()
        result = await self._directory.tokens_repo.rotate(
            hash_refresh_token(refresh_token),
            hash_refresh_token(new_refresh),
            now,
            self._settings.refresh_token_idle_ttl,
            self._settings.refresh_chain_max_age,
        )
        if result.family is not None:
            self._directory.put_family(result.family)  # older tokens of it stop counting
        if result.outcome is not RotateOutcome.ROTATED or result.family is None:
            raise UnauthorizedError(_BAD_REFRESH)
        user = self._directory.user(result.family.user_id)
        if user is None or user.disabled:
            raise UnauthorizedError(_BAD_REFRESH)
        return self._pair(result.family, user.username, new_refresh, now)

    async def revoke(self, refresh_token: str) -> None:
        family = await self._directory.tokens_repo.revoke(
            hash_refresh_token(refresh_token), time.time()
        )
        if family is None:
            raise UnauthorizedError(_BAD_REFRESH)
        self._directory.put_family(family)

    def authenticate(self, token: str) -> Identity:
        """The caller behind a bearer token, or 401. Pure memory: no I/O."""
        claims = self._codec.decode(token)
        identity = self._directory.identity(claims.user_id, claims.family, claims.generation)
        if identity is None:
            raise UnauthorizedError(
                "the access token was revoked or replaced, or its user is disabled"
            )
        return identity

    def _pair(self, family: FamilyState, username: str, refresh: str, now: float) -> TokenPair:
        self._directory.put_family(family)
        access, expires = self._codec.issue(
            family.user_id, username, family.id, family.generation, now
        )
        return TokenPair(access, self._codec.ttl, expires, refresh)
