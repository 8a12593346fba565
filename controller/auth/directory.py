"""In-memory view of users and recent token families, so checking a request costs no I/O.

The controller is the only writer of these tables except for the ``o16n users`` CLI,
which runs in another process, and the other controllers of a group (docs/web-nodes.md).
A background task polls the store's count of changes to users and tokens
(``Database.changes``) and reloads when another process changed something, so a
disabled user, a new role or a revoked token takes effect within a second everywhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from controller.auth.roles import Identity
from controller.roles import Role
from controller.store.db import Database
from controller.store.tokens import FamilyState, TokensRepo
from controller.store.users import UserRecord, UsersRepo

log = logging.getLogger(__name__)

#: Families remembered as not found between two reloads, at most.
UNKNOWN_MAX = 10_000


class Directory:
    def __init__(self, db: Database, access_ttl: int) -> None:
        self._db = db
        self.users_repo = UsersRepo(db)
        self.tokens_repo = TokensRepo(db)
        self._access_ttl = access_ttl
        self._users: dict[int, UserRecord] = {}
        self._families: dict[str, FamilyState] = {}
        self._data_version = -1
        #: reloads so far: a store read that a reload overtook never overwrites it
        self._loads = 0
        #: families of tokens looked up and not found (a deleted account's, say), until
        #: the next reload: one read each, not one per request
        self._unknown: set[str] = set()
        #: where the accounts our tokens may belong to come from (``local`` off while a
        #: directory is enabled, unless kept as a break-glass; ``ldap`` while LDAP is on)
        self.sources: frozenset[str] = frozenset({"local"})
        #: more hourly clean-ups (the audit trail's retention), run by ``watch``
        self.purgers: list[Callable[[], Awaitable[object]]] = []
        #: whether this controller runs the group's purges now (the purges' lease holder:
        #: the rows are shared, one controller of the group is enough)
        self.purge_here: Callable[[], bool] = lambda: True

    async def reload(self) -> None:
        """Load every user and every family touched within one access-token lifetime.

        Any unexpired access token was issued (login or refresh) within that window, and
        issuing touches its family, so the map answers for every token that can be live.
        """
        version = await self._db.changes("auth")
        users = await self.users_repo.all()
        families = await self.tokens_repo.touched_since(time.time() - self._access_ttl - 60)
        self._users = {u.id: u for u in users}
        self._families = {f.id: f for f in families}
        self._data_version = version
        self._loads += 1
        self._unknown.clear()

    async def watch(self, interval: float = 1.0, purge_every: float = 3600.0) -> None:
        """Reload whenever another process (the CLI, another controller) committed to the
        database; now and then, delete refresh tokens and families nobody can use any more
        (if this controller runs the group's purges)."""
        purged = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            try:
                if await self._db.changes("auth") != self._data_version:
                    await self.reload()
                if time.monotonic() - purged > purge_every:
                    purged = time.monotonic()
                    self._prune()  # only memory: a pruned family's tokens have all expired
                    if self.purge_here():
                        await self.tokens_repo.purge(time.time(), keep_revoked_for=self._access_ttl)
                        for purge in self.purgers:
                            await purge()
            except Exception:  # keep watching; the next round retries
                log.exception("reloading users and tokens failed")

    def user(self, user_id: int) -> UserRecord | None:
        return self._users.get(user_id)

    def put_user(self, user: UserRecord) -> None:
        self._users[user.id] = user

    async def record_directory_user(
        self,
        source: str,
        external_id: str,
        username: str,
        role: Role,
        display_name: str | None,
        email: str | None,
    ) -> UserRecord:
        """Record what a directory (LDAP, Azure AD) says of one of its users, roles checked
        now, in the store and in this view; 409 if ``username`` names another account."""
        user = await self.users_repo.sync_directory_user(
            source,
            external_id,
            username,
            role,
            display_name=display_name,
            email=email,
            disabled=False,
            checked_at=time.time(),
        )
        self.put_user(user)
        return user

    def put_family(self, family: FamilyState) -> None:
        self._families[family.id] = family

    def identity(self, user_id: int, family: str, generation: int) -> Identity | None:
        """The identity behind a verified access token, or ``None`` if it no longer counts."""
        state = self._families.get(family)
        if state is None or state.revoked or state.generation != generation:
            return None
        user = self._users.get(user_id)
        if user is None or user.disabled or state.user_id != user_id or not self.admits(user):
            return None
        return Identity(user.id, user.username, user.role)

    async def look_up(self, user_id: int, family: str, generation: int) -> Identity | None:
        """``identity``, after reading the family (and the user) from the store when this
        view does not know it yet: another controller of the group issued or rotated the
        token since the last reload. A known verdict (revoked, or a newer generation
        seen) is final and costs no I/O; the token's signature was checked before."""
        identity = self.identity(user_id, family, generation)
        if identity is not None:
            return identity
        known = self._families.get(family)
        if known is not None and (known.revoked or known.generation > generation):
            return None
        if family in self._unknown:  # read before and not there: until the next reload
            return None
        loads = self._loads
        fresh = known
        if fresh is None or fresh.generation != generation:
            fresh = await self.tokens_repo.family(family)
        user = self._users.get(user_id)
        if fresh is not None and user is None:
            user = await self.users_repo.by_id(user_id)
        if self._loads != loads:  # a reload ran meanwhile: its view is the newer one
            return self.identity(user_id, family, generation)
        if fresh is None:
            if len(self._unknown) < UNKNOWN_MAX:
                self._unknown.add(family)
            return None
        self._families[family] = fresh
        if user is not None:
            self._users[user.id] = user
        return self.identity(user_id, family, generation)

    def admits(self, user: UserRecord) -> bool:
        """Whether accounts like ``user``'s may sign in at all now."""
        return user.source in self.sources

    def _prune(self) -> None:
        cutoff = time.time() - self._access_ttl - 60
        for fid in [f for f, s in self._families.items() if s.touched_at < cutoff]:
            del self._families[fid]
