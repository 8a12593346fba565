"""Repository of user accounts: local ones, and directory users (LDAP, Azure AD) recorded
at their first login."""

from __future__ import annotations

import time
from dataclasses import dataclass

from controller.errors import ConflictError, NotFoundError
from controller.roles import Role
from controller.store.db import Connection, Database, Row
from controller.store.tokens import revoke_families


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: int
    username: str
    password_hash: str
    role: Role
    disabled: bool
    #: ``local`` (a password here), ``ldap`` or ``aad`` (the directory checks who it is)
    source: str = "local"
    #: the directory's id of the account (LDAP: the unique-id attribute; Azure AD: oid)
    external_id: str | None = None
    display_name: str | None = None
    email: str | None = None
    #: when the directory was last asked for this user's roles (epoch seconds)
    roles_checked_at: float | None = None

    @property
    def is_local(self) -> bool:
        return self.source == "local"

    @classmethod
    def from_row(cls, row: Row) -> UserRecord:
        return cls(
            id=row["id"],
            username=row["username"],
            password_hash=row["password_hash"],
            role=Role(row["role"]),
            disabled=bool(row["disabled"]),
            source=row["source"],
            external_id=row["external_id"],
            display_name=row["display_name"],
            email=row["email"],
            roles_checked_at=row["roles_checked_at"],
        )


class UsersRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def all(self) -> list[UserRecord]:
        rows = await self._db.fetchall("SELECT * FROM users ORDER BY id")
        return [UserRecord.from_row(r) for r in rows]

    async def by_id(self, user_id: int) -> UserRecord | None:
        row = await self._db.fetchone("SELECT * FROM users WHERE id = ?", (user_id,))
        return UserRecord.from_row(row) if row else None

    async def by_name(self, username: str) -> UserRecord | None:
        row = await self._db.fetchone("SELECT * FROM users WHERE username = ?", (username,))
        return UserRecord.from_row(row) if row else None

    async def add(self, username: str, password_hash: str, role: Role) -> UserRecord:
        now = time.time()
        async with self._db.transaction() as conn:
            cur = await conn.execute("SELECT 1 FROM users WHERE username = ?", (username,))
            if await cur.fetchone():
                raise ConflictError(f"user '{username}' already exists")
            cur = await conn.execute(
                "INSERT INTO users (username, password_hash, role, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?) RETURNING id",
                (username, password_hash, role.value, now, now),
            )
            row = await cur.fetchone()
        assert row is not None
        user_id = int(row[0])
        return UserRecord(user_id, username, password_hash, role, disabled=False)

    async def by_external(self, source: str, external_id: str) -> UserRecord | None:
        row = await self._db.fetchone(
            "SELECT * FROM users WHERE source = ? AND external_id = ?", (source, external_id)
        )
        return UserRecord.from_row(row) if row else None

    async def sync_directory_user(
        self,
        source: str,
        external_id: str,
        username: str,
        role: Role,
        *,
        display_name: str | None,
        email: str | None,
        disabled: bool,
        checked_at: float,
    ) -> UserRecord:
        """Record what the directory says of one of its users: created at first sight
        (``disabled`` applies then only: later, a local operator's ``disabled`` stands),
        updated after. 409 if ``username`` already names another account (a local one, or
        another directory object): it never takes over what that account owns."""
        async with self._db.transaction() as conn:
            cur = await conn.execute(
                "SELECT * FROM users WHERE source = ? AND external_id = ?", (source, external_id)
            )
            row = await cur.fetchone()
            if row is None:
                cur = await conn.execute("SELECT 1 FROM users WHERE username = ?", (username,))
                if await cur.fetchone():
                    raise ConflictError(f"the name '{username}' belongs to another account")
                cur = await conn.execute(
                    "INSERT INTO users (username, password_hash, role, disabled, created_at,"
                    " updated_at, source, external_id, display_name, email, roles_checked_at)"
                    " VALUES (?, '', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        username,
                        role.value,
                        int(disabled),
                        checked_at,
                        checked_at,
                        source,
                        external_id,
                        display_name,
                        email,
                        checked_at,
                    ),
                )
            else:
                if row["username"] != username:
                    cur = await conn.execute(
                        "SELECT 1 FROM users WHERE username = ? AND id != ?",
                        (username, row["id"]),
                    )
                    if await cur.fetchone():
                        raise ConflictError(f"the name '{username}' belongs to another account")
                await conn.execute(
                    "UPDATE users SET username = ?, role = ?, display_name = ?,"
                    " email = ?, roles_checked_at = ?, updated_at = ? WHERE id = ?",
                    (
                        username,
                        role.value,
                        display_name,
                        email,
                        checked_at,
                        checked_at,
                        row["id"],
                    ),
                )
            cur = await conn.execute(
                "SELECT * FROM users WHERE source = ? AND external_id = ?", (source, external_id)
            )
            fresh = await cur.fetchone()
        assert fresh is not None
        return UserRecord.from_row(fresh)

    async def update(
        self,
        username: str,
        *,
        password_hash: str | None = None,
        role: Role | None = None,
        disabled: bool | None = None,
        revoke_tokens: bool = False,
        keep_an_owner: bool = False,
    ) -> None:
        """Change one account; ``revoke_tokens`` also ends all its refresh-token families;
        ``keep_an_owner``: 409 (nothing changed) if no enabled Owner would be left."""
        now = time.time()
        sets: list[str] = ["updated_at = ?"]
        params: list[object] = [now]
        if password_hash is not None:
            sets.append("password_hash = ?")
            params.append(password_hash)
        if role is not None:
            sets.append("role = ?")
            params.append(role.value)
        if disabled is not None:
            sets.append("disabled = ?")
            params.append(int(disabled))
        async with self._db.transaction() as conn:
            cur = await conn.execute(
                f"UPDATE users SET {', '.join(sets)} WHERE username = ?",  # noqa: S608 (fixed column names)
                (*params, username),
            )
            if cur.rowcount == 0:
                raise NotFoundError(f"no user '{username}'")
            if revoke_tokens:
                await revoke_families(
                    conn,
                    now,
                    "account changed",
                    "revoked_at IS NULL AND user_id = (SELECT id FROM users WHERE username = ?)",
                    username,
                )
            if keep_an_owner:
                await check_an_owner_left(conn)

    async def record_login(self, user_id: int, at: float) -> None:
        """When the user last logged in, for the operator's user list."""
        await self._db.execute("UPDATE users SET last_login_at = ? WHERE id = ?", (at, user_id))

    async def delete(self, username: str) -> None:
        """Delete an account (its token families, session records and batches cascade);
        409 if it is the last enabled Owner, or still owns a service or snapshot (one made
        since the caller looked: it is never deleted with its owner)."""
        async with self._db.transaction() as conn:
            cur = await conn.execute(
                "SELECT 1 FROM services s JOIN users u ON u.id = s.publisher_id"
                " WHERE u.username = ? UNION ALL SELECT 1 FROM snapshots p"
                " JOIN users u ON u.id = p.owner_id WHERE u.username = ? LIMIT 1",
                (username, username),
            )
            if await cur.fetchone() is not None:
                raise ConflictError(
                    f"'{username}' owns services or snapshots; hand them over first"
                )
            cur = await conn.execute("DELETE FROM users WHERE username = ?", (username,))
            if cur.rowcount == 0:
                raise NotFoundError(f"no user '{username}'")
            await check_an_owner_left(conn)


#: what the admin messages call each directory
DIRECTORY_NAMES = {"ldap": "LDAP / Active Directory", "aad": "Azure AD"}


def refuse_directory_owned(
    username: str, source: str, *, password: bool = False, role: bool = False
) -> None:
    """409 for a change the directory decides for its users: their password is the
    directory's, and their role is set from its groups again at the next lookup, so an
    operator's change would only seem to work."""
    directory = DIRECTORY_NAMES.get(source)
    if directory is None:
        return
    if password:
        raise ConflictError(
            f"'{username}' signs in with {directory}: the directory keeps the password; "
            "change it there"
        )
    if role:
        raise ConflictError(
            f"the role of '{username}' comes from {directory} groups, as the Authorization "
            "section of appsettings.json maps them, and is set again at each lookup; "
            "change the user's groups or that mapping instead"
        )


async def check_an_owner_left(conn: Connection) -> None:
    """Inside a write transaction: 409 (rolling it back) when no enabled Owner is left."""
    cur = await conn.execute("SELECT 1 FROM users WHERE role = 'Owner' AND disabled = 0 LIMIT 1")
    if await cur.fetchone() is None:
        raise ConflictError("that would leave no enabled Owner; make another user an Owner first")
