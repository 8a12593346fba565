"""Active Directory / LDAP users: their password checked by the directory at login, their
role from their groups, looked up again once older than ``CacheLifeTimeInMinutes``.

An LDAP user logs in through ``POST /login`` like a local one and gets the same token pair;
the account is recorded at its first login, named by the directory's unique-id attribute.
A user the directory disables, deletes or drops from every group that gives access loses
the tokens it holds at the next role lookup. While the directory is unreachable, logins
get 503 and the roles already looked up stay in force (retried every ``RETRY_SECONDS``).
"""

from __future__ import annotations

import asyncio
import logging
import time

from controller.auth.appsettings import RoleGroups
from controller.auth.directory import Directory
from controller.auth.ldap_accounts import DirectoryUnavailable, LdapAccount, LdapAccounts
from controller.errors import (
    ConflictError,
    ForbiddenError,
    ServiceUnavailableError,
    UnauthorizedError,
)
from controller.health import node
from controller.metrics.definitions import login_refusals
from controller.roles import Role
from controller.store.users import UserRecord

log = logging.getLogger(__name__)

SOURCE = "ldap"
#: after a failed role lookup, the cached roles serve this long before the next try
RETRY_SECONDS = 30.0
#: how long one ``/status`` answer about the directory is reused: a good one, a bad one
#: (it is back soon after it is back)
STATUS_SECONDS = 5.0
FAIL_SECONDS = 1.0
#: how long ``/status`` waits for the directory (it answers within seconds regardless)
STATUS_TIMEOUT = 2.0

#: how long a request waits for its user's role lookup (then the roles looked up last serve)
LOOKUP_WAIT = 1.0

UNAVAILABLE = "the directory service (LDAP) cannot be reached now; try again later"


class LdapSignIn:
    def __init__(
        self,
        accounts: LdapAccounts,
        roles: RoleGroups,
        directory: Directory,
        bad_credentials: str,
    ) -> None:
        self._accounts = accounts
        self._roles = roles
        self._directory = directory
        self._bad_credentials = bad_credentials
        #: each user's lookup under way, and until when (monotonic) requests wait for it
        self._lookups: dict[int, tuple[asyncio.Future[UserRecord | None], float]] = {}
        self._retry_at: dict[int, float] = {}
        self._status: dict[str, object] | None = None
        #: when the cached ``/status`` answer is due for renewal (monotonic)
        self._status_at = 0.0
        self._status_lock = asyncio.Lock()

    async def login(self, username: str, password: str) -> UserRecord:
        """The account behind a correct user name and password; 401 (the same answer for
        every wrong one), 403 for a user no listed group admits, 503 if the directory is
        unreachable. A failure is counted here (``o16n_logins_total``), a success by
        ``AuthService.login`` once the tokens are made."""
        with login_refusals(SOURCE):
            return await self._login(username, password)

    async def _login(self, username: str, password: str) -> UserRecord:
        try:
            account = await self._accounts.authenticate(username, password)
        except DirectoryUnavailable as exc:
            log.warning("LDAP login impossible: the directory is unavailable: %s", exc)
            raise ServiceUnavailableError(UNAVAILABLE) from None
        if account is None:
            raise UnauthorizedError(self._bad_credentials)
        if account.disabled:
            await self._end_logins(account.unique_id, "disabled in the directory")
            raise UnauthorizedError(self._bad_credentials)
        try:
            role = self._role(account)
        except ForbiddenError:  # groups read just now: the tokens it holds end too
            await self._end_logins(account.unique_id, "in no group that gives access")
            raise
        user = await self._record(account, role)
        if user.disabled:  # an Owner of o16n disabled this account
            raise UnauthorizedError(self._bad_credentials)
        return user

    def stale(self, user: UserRecord, now: float) -> bool:
        """Whether ``user``'s roles are due for a lookup (an LDAP user's, older than the
        cache lifetime, and not waiting out a failed lookup)."""
        return (
            user.source == SOURCE
            and (user.roles_checked_at or 0.0) + self._roles.cache_lifetime <= now
            and self._retry_at.get(user.id, 0.0) <= now
        )

    async def refresh(self, user: UserRecord) -> UserRecord | None:
        """``user`` with roles looked up again, or ``None`` if the directory no longer
        lets it in (its tokens are then revoked). One lookup per user at a time. A
        directory that is slow to answer (one that went silent takes the LDAP timeout per
        step, more with every worker busy) holds a request ``LOOKUP_WAIT`` at most: then
        ``user`` as it is, while the lookup goes on and applies when it ends."""
        entry = self._lookups.get(user.id)
        if entry is None:
            task: asyncio.Future[UserRecord | None] = asyncio.ensure_future(self._lookup(user))
            entry = (task, time.monotonic() + LOOKUP_WAIT)
            self._lookups[user.id] = entry
            task.add_done_callback(lambda done: self._lookup_ended(user, done))
        pending, wait_until = entry
        if pending.done():
            return pending.result()
        try:
            return await asyncio.wait_for(
                asyncio.shield(pending), max(wait_until - time.monotonic(), 0.0)
            )
        except TimeoutError:
            return user

    def _lookup_ended(self, user: UserRecord, done: asyncio.Future[UserRecord | None]) -> None:
        self._lookups.pop(user.id, None)
        if not done.cancelled() and done.exception() is not None:  # (its waiters get it too)
            log.error(
                "LDAP role lookup failed", exc_info=done.exception(), extra={"user": user.username}
            )

    async def status(self) -> dict[str, object]:
        """The ``/status`` node of the directory: ``fail`` while it cannot be reached."""
        async with self._status_lock:
            if self._status is None or time.monotonic() > self._status_at:
                try:
                    await asyncio.wait_for(self._accounts.check(), STATUS_TIMEOUT)
                    self._status = node("pass", {"type": "ldap"})
                    self._status_at = time.monotonic() + STATUS_SECONDS
                except (DirectoryUnavailable, TimeoutError) as exc:
                    log.warning("LDAP check failed: %s", exc or "no answer in time")
                    self._status = node("fail", {"type": "ldap", "state": "Unreachable"})
                    self._status_at = time.monotonic() + FAIL_SECONDS
            return self._status

    async def _lookup(self, user: UserRecord) -> UserRecord | None:
        assert user.external_id is not None
        try:
            account = await self._accounts.lookup(user.external_id)
        except DirectoryUnavailable as exc:
            log.warning(
                "LDAP role lookup failed; the cached roles stay for now: %s",
                exc,
                extra={"user": user.username},
            )
            self._retry_at[user.id] = time.time() + RETRY_SECONDS
            return user
        self._retry_at.pop(user.id, None)
        if account is None or account.disabled:
            why = "gone from the directory" if account is None else "disabled in the directory"
            await self._end_logins(user.external_id, why)
            return None
        try:
            role = self._role(account)
        except ForbiddenError:
            await self._end_logins(user.external_id, "in no group that gives access")
            return None
        try:
            return await self._record(account, role)
        except UnauthorizedError:
            return None

    def _role(self, account: LdapAccount) -> Role:
        role = self._roles.role_for(account.groups)
        if role is None:
            raise ForbiddenError(
                f"'{account.unique_id}' is in none of the directory groups that give access "
                "to this server; ask its operator"
            )
        return role

    async def _record(self, account: LdapAccount, role: Role) -> UserRecord:
        try:
            return await self._directory.record_directory_user(
                SOURCE,
                account.unique_id,
                account.unique_id,
                role,
                account.display_name,
                account.email,
            )
        except ConflictError:
            log.warning(
                "an LDAP user's unique id names another account of o16n; it cannot log in "
                "until that account is renamed or deleted",
                extra={"user": account.unique_id},
            )
            raise UnauthorizedError(self._bad_credentials) from None

    async def _end_logins(self, unique_id: str, why: str) -> None:
        user = await self._directory.users_repo.by_external(SOURCE, unique_id)
        if user is None:
            return
        log.info("ending the logins of an LDAP user: %s", why, extra={"user": user.username})
        await self._directory.users_repo.update(user.username, revoke_tokens=True)
        await self._directory.reload()
