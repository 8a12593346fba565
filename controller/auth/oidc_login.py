"""Azure AD (OpenID Connect) users: the provider's access token is the bearer token.

Microsoft's SDK sends it as it is (``auth="<token>"`` or an ADAL dict), so there is no
``/login`` for these users: each request's token is verified (``oidc.OidcVerifier``, which
caches verified tokens until they expire) and its ``groups`` claim gives the role. The
account is recorded at its first request, keyed by the token's object id, and named by its
user principal name; a local Owner may disable it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from controller.auth.appsettings import RoleGroups
from controller.auth.directory import Directory
from controller.auth.oidc import OidcIdentity, OidcVerifier
from controller.auth.roles import Identity
from controller.errors import ConflictError, ForbiddenError, UnauthorizedError
from controller.health import node
from controller.metrics.definitions import count_login, login_refusals
from controller.store.users import UserRecord

SOURCE = "aad"
_KNOWN_USERS = 10_000


class OidcSignIn:
    def __init__(self, verifier: OidcVerifier, roles: RoleGroups, directory: Directory) -> None:
        self._verifier = verifier
        self._roles = roles
        self._directory = directory
        #: subject → the account recorded for it (the latest role it was recorded with)
        self._users: OrderedDict[str, UserRecord] = OrderedDict()
        self._recording: dict[str, asyncio.Future[UserRecord]] = {}

    async def authenticate(self, token: str) -> Identity:
        """The caller behind a provider's access token: 401 for an invalid one, 403 for a
        user no listed group admits (or a token that lists no groups, only an overage).
        A token's first use is a sign-in (``o16n_logins_total``): a success only if the
        user is admitted, as with LDAP."""
        claims, new = await self._verifier.verify_new(token)
        if not new:
            return await self._admit(claims)
        with login_refusals(SOURCE):
            identity = await self._admit(claims)
        count_login(SOURCE, "success")
        return identity

    async def _admit(self, claims: OidcIdentity) -> Identity:
        role = self._roles.role_for(claims.groups)
        if role is None:
            raise ForbiddenError(
                f"'{claims.username}' is in none of the directory groups that give access "
                "to this server; ask its operator"
            )
        user = self._users.get(claims.subject)
        if user is None or user.role is not role or user.username != claims.username:
            user = await self._record(claims)
        else:
            self._users.move_to_end(claims.subject)
        live = self._directory.user(user.id)
        if live is None:  # an Owner deleted the account: the next use records it anew
            self._users.pop(claims.subject, None)
            user = await self._record(claims)
            live = self._directory.user(user.id)
        if live is None or live.disabled:
            raise UnauthorizedError("this account is disabled on this server")
        return Identity(user.id, user.username, role)

    def status(self) -> dict[str, object]:
        """The ``/status`` node of the identity provider (its keys, and whether it answers)."""
        report = dict(self._verifier.status())
        state = str(report.pop("status", "fail"))
        return node("pass" if state == "ok" else state, {"type": "oidc", **report})

    async def _record(self, claims: OidcIdentity) -> UserRecord:
        """Create or update the account; one write per subject at a time."""
        pending = self._recording.get(claims.subject)
        if pending is None:
            pending = asyncio.ensure_future(self._write(claims))
            self._recording[claims.subject] = pending
            pending.add_done_callback(lambda _: self._recording.pop(claims.subject, None))
        return await asyncio.shield(pending)

    async def _write(self, claims: OidcIdentity) -> UserRecord:
        role = self._roles.role_for(claims.groups)
        assert role is not None
        try:
            user = await self._directory.record_directory_user(
                SOURCE,
                claims.subject,
                claims.username,
                role,
                claims.display_name,
                claims.email,
            )
        except ConflictError:
            raise UnauthorizedError(
                f"the name '{claims.username}' belongs to another account of this server; "
                "ask its operator"
            ) from None
        self._users[claims.subject] = user
        self._users.move_to_end(claims.subject)
        if len(self._users) > _KNOWN_USERS:
            self._users.popitem(last=False)
        return user
