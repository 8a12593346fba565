"""Login, refresh and revoke: the token lifecycle of API.md §3, and the bearer check.

Who may sign in comes from ``appsettings.DirectoryConfig``: local accounts (off while a
directory is enabled, unless the operator keeps them as a break-glass), Active Directory /
LDAP users (``ldap_login``: ``/login`` with their directory password, our token pair) or
Azure AD users (``oidc_login``: the provider's own access token as the bearer).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from aiohttp import web

from controller.audit.log import AuditLog
from controller.auth.appsettings import DirectoryConfig
from controller.auth.directory import Directory
from controller.auth.jwt_tokens import (
    AccessTokenCodec,
    hash_refresh_token,
    new_family_id,
    new_refresh_token,
)
from controller.auth.ldap_accounts import matching_name
from controller.auth.ldap_login import LdapSignIn
from controller.auth.oidc_login import OidcSignIn
from controller.auth.passwords import dummy_hash, verify_password_async
from controller.auth.roles import Identity
from controller.auth.throttle import LoginThrottle
from controller.errors import TooManyRequestsError, UnauthorizedError
from controller.metrics.definitions import count_login
from controller.settings import Settings
from controller.store.tokens import FamilyState, RotateOutcome
from controller.store.users import UserRecord

BAD_CREDENTIALS = "the user name or password is incorrect"
_BAD_REFRESH = "the refresh token is not valid, has expired or was revoked; log in again"
_REVOKED = "the access token was revoked or replaced, or its user is disabled"
_USE_AAD = (
    "this server signs users in with Azure Active Directory: send an access token from it "
    "as the bearer token instead of logging in here"
)


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    expires_in: int
    expires_on: int
    refresh_token: str
    device_cookie: str | None = None  # OWASP device cookie, set by a successful login

    def to_json(self) -> dict[str, object]:
        return {
            "token_type": "Bearer",
            "access_token": self.access_token,
            "expires_in": self.expires_in,
            "expires_on": self.expires_on,
            "refresh_token": self.refresh_token,
        }


class AuthService:
    def __init__(
        self,
        settings: Settings,
        directory: Directory,
        codec: AccessTokenCodec,
        config: DirectoryConfig | None = None,
        *,
        ldap: LdapSignIn | None = None,
        oidc: OidcSignIn | None = None,
    ) -> None:
        self._settings = settings
        self._directory = directory
        self._codec = codec
        self._config = config or DirectoryConfig()
        self._ldap = ldap
        self._oidc = oidc
        self._throttle = LoginThrottle(
            settings.login_max_failures,
            settings.login_max_failures_per_address,
            settings.login_failure_window,
            settings.login_max_failures_per_user,
        )
        self._device_key = codec.sub_key("o16n device cookie")
        self._dummy_hash = dummy_hash()
        self.audit: AuditLog | None = None  # set by the app factory

    @property
    def directory(self) -> Directory:
        return self._directory

    @property
    def local_accounts(self) -> bool:
        """Whether local accounts may sign in (``appsettings.DirectoryConfig``)."""
        return self._config.local_accounts

    async def login(
        self, username: str, password: str, address: str, device_cookie: str | None = None
    ) -> TokenPair:
        """Check the password, throttled (``throttle``); ``device_cookie`` is the cookie an
        earlier successful login of this user set (``TokenPair.device_cookie``)."""
        device = self._device(username, device_cookie)
        # a directory finds one account under many spellings of its name: count them as one
        counted = username if self._ldap is None else matching_name(username)
        try:
            self._throttle.begin(counted, address, device)
        except TooManyRequestsError:  # counted under the directory /login checks, if any
            count_login("local" if self._ldap is None else "ldap", "throttled")
            raise
        try:
            user = await self._check_password(username, password)
        except UnauthorizedError:
            self._throttle.failed(counted, address, device=device)
            raise
        finally:
            self._throttle.end(counted, address, device)
        self._throttle.succeeded(counted, address, device)
        self._directory.put_user(user)
        now = time.time()
        await self._directory.users_repo.record_login(user.id, now)
        refresh = new_refresh_token()
        family = await self._directory.tokens_repo.start_family(
            new_family_id(),
            user.id,
            hash_refresh_token(refresh),
            now,
            now + min(self._settings.refresh_token_idle_ttl, self._settings.refresh_chain_max_age),
        )
        pair = self._pair(family, user.username, refresh, now)
        count_login(user.source, "success")
        return dataclasses.replace(pair, device_cookie=self._new_device_cookie(username))

    async def _check_password(self, username: str, password: str) -> UserRecord:
        """The account a user name and password prove, or 401; a local account if local
        accounts are on and one has that name, else the LDAP directory's."""
        user = None
        if self._config.local_accounts:
            user = await self._directory.users_repo.by_name(username)
            if user is not None and not user.is_local:
                user = None
        if user is None and self._ldap is not None:
            if not self._config.local_accounts:
                return await self._ldap.login(username, password)
            # Local accounts kept beside the directory: a name that is not one costs a
            # password hash too, so the time of a 401 does not tell which names are local.
            dummy = asyncio.ensure_future(verify_password_async(self._dummy_hash, password))
            try:
                return await self._ldap.login(username, password)
            finally:
                await dummy
        if user is None and not self._config.local_accounts:
            count_login("local", "failure")
            raise UnauthorizedError(_USE_AAD)
        # Unknown users are checked against a dummy hash: same answer, same time.
        hashed = user.password_hash if user else self._dummy_hash
        ok = await verify_password_async(hashed, password)
        if user is None or not ok or user.disabled:
            count_login("local", "failure")
            raise UnauthorizedError(BAD_CREDENTIALS)
        return user

    def _new_device_cookie(self, username: str) -> str:
        nonce = secrets.token_urlsafe(16)
        return f"{nonce}.{self._device_signature(username, nonce)}"

    def _device(self, username: str, cookie: str | None) -> str | None:
        """The device id of a valid device cookie of ``username``, else ``None``."""
        if not cookie or len(cookie) > 200:
            return None
        nonce, _, signature = cookie.partition(".")
        expected = self._device_signature(username, nonce)
        # bytes: compare_digest raises on a str with non-ASCII characters (a forged cookie)
        if not nonce or not hmac.compare_digest(
            signature.encode("utf-8", "surrogatepass"), expected.encode()
        ):
            return None
        return nonce

    def _device_signature(self, username: str, nonce: str) -> str:
        message = f"{username.lower()}|{nonce}".encode("utf-8", "surrogatepass")
        return hmac.new(self._device_key, message, hashlib.sha256).hexdigest()

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
            if result.outcome is RotateOutcome.REUSED and self.audit is not None:
                owner = self._directory.user(result.family.user_id)
                name = owner.username if owner is not None else str(result.family.user_id)
                self.audit.record("token.reuse", name, "revoked", actor=name)
        if result.outcome is not RotateOutcome.ROTATED or result.family is None:
            raise UnauthorizedError(_BAD_REFRESH)
        user = self._directory.user(result.family.user_id)
        if user is not None and self._ldap is not None and self._ldap.stale(user, now):
            user = await self._ldap.refresh(user)
        if user is None or user.disabled or not self._directory.admits(user):
            raise UnauthorizedError(_BAD_REFRESH)
        return self._pair(result.family, user.username, new_refresh, now)

    async def revoke(self, refresh_token: str) -> None:
        family = await self._directory.tokens_repo.revoke(
            hash_refresh_token(refresh_token), time.time()
        )
        if family is None:
            raise UnauthorizedError(_BAD_REFRESH)
        self._directory.put_family(family)

    async def authenticate(self, token: str) -> Identity:
        """The caller behind a bearer token, or 401. Our own tokens cost no I/O but an LDAP
        user's role lookup once per ``CacheLifeTimeInMinutes``; an identity provider's
        token costs its verification once (``oidc_login``)."""
        if self._oidc is not None and not self._codec.is_ours(token):
            return await self._oidc.authenticate(token)
        claims = self._codec.decode(token)
        identity = self._directory.identity(claims.user_id, claims.family, claims.generation)
        if identity is None:  # issued or rotated by another controller of the group?
            identity = await self._directory.look_up(
                claims.user_id, claims.family, claims.generation
            )
        if identity is None:
            raise UnauthorizedError(_REVOKED)
        if self._ldap is not None:
            user = self._directory.user(identity.user_id)
            if user is not None and self._ldap.stale(user, time.time()):
                fresh = await self._ldap.refresh(user)
                if fresh is None:
                    raise UnauthorizedError(_REVOKED)
                identity = Identity(fresh.id, fresh.username, fresh.role)
        return identity

    async def checks(self) -> dict[str, dict[str, object]]:
        """``/status`` nodes of the directory users sign in with (none for local accounts)."""
        if self._ldap is not None:
            return {"directory": await self._ldap.status()}
        if self._oidc is not None:
            return {"directory": self._oidc.status()}
        return {}

    def _pair(self, family: FamilyState, username: str, refresh: str, now: float) -> TokenPair:
        self._directory.put_family(family)
        access, expires = self._codec.issue(
            family.user_id, username, family.id, family.generation, now
        )
        return TokenPair(access, self._codec.ttl, expires, refresh)


#: The app's token service.
AUTH = web.AppKey("auth", AuthService)
