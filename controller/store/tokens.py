"""Repository of refresh-token families.

A *family* starts at a login. Each refresh rotates it: the presented token dies, a new one
of the next *generation* is issued, and access tokens carry ``(family, generation)`` so
that only the newest pair works. Presenting a token that was already rotated away is
treated as theft: the whole family is revoked. Only SHA-256 hashes of refresh tokens are
stored.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from controller.store.db import Connection, Database, Row


@dataclass(frozen=True, slots=True)
class FamilyState:
    id: str
    user_id: int
    generation: int
    revoked: bool
    touched_at: float

    @classmethod
    def from_row(cls, row: Row) -> FamilyState:
        return cls(
            id=row["id"],
            user_id=row["user_id"],
            generation=row["generation"],
            revoked=row["revoked_at"] is not None,
            touched_at=row["touched_at"],
        )


class RotateOutcome(enum.Enum):
    ROTATED = "rotated"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"
    REUSED = "reused"


@dataclass(frozen=True, slots=True)
class RotateResult:
    outcome: RotateOutcome
    family: FamilyState | None = None


class TokensRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def start_family(
        self, family_id: str, user_id: int, token_hash: str, now: float, expires_at: float
    ) -> FamilyState:
        async with self._db.transaction() as conn:
            await conn.execute(
                "INSERT INTO token_families (id, user_id, started_at, touched_at, generation)"
                " VALUES (?, ?, ?, ?, 1)",
                (family_id, user_id, now, now),
            )
            await conn.execute(
                "INSERT INTO refresh_tokens (token_hash, family_id, generation, created_at,"
                " expires_at) VALUES (?, ?, 1, ?, ?)",
                (token_hash, family_id, now, expires_at),
            )
        return FamilyState(family_id, user_id, 1, revoked=False, touched_at=now)

    async def rotate(
        self,
        token_hash: str,
        new_hash: str,
        now: float,
        idle_ttl: float,
        chain_max_age: float,
    ) -> RotateResult:
        """Exchange a refresh token for the next one of its family, atomically."""
        async with self._db.transaction() as conn:
            row = await _token_and_family(conn, token_hash)
            if row is None:
                return RotateResult(RotateOutcome.UNKNOWN)
            family = FamilyState.from_row(row)
            if family.revoked:
                return RotateResult(RotateOutcome.REVOKED, family)
            if row["token_gen"] != family.generation:
                await revoke_families(conn, now, "refresh token reused", "id = ?", family.id)
                return RotateResult(
                    RotateOutcome.REUSED,
                    FamilyState(family.id, family.user_id, family.generation, True, now),
                )
            if row["expires_at"] <= now:
                return RotateResult(RotateOutcome.EXPIRED, family)
            generation = family.generation + 1
            expires_at = min(now + idle_ttl, row["started_at"] + chain_max_age)
            if expires_at <= now:
                return RotateResult(RotateOutcome.EXPIRED, family)
            await conn.execute(
                "UPDATE token_families SET generation = ?, touched_at = ? WHERE id = ?",
                (generation, now, family.id),
            )
            await conn.execute(
                "INSERT INTO refresh_tokens (token_hash, family_id, generation, created_at,"
                " expires_at) VALUES (?, ?, ?, ?, ?)",
                (new_hash, family.id, generation, now, expires_at),
            )
            return RotateResult(
                RotateOutcome.ROTATED,
                FamilyState(family.id, family.user_id, generation, False, now),
            )

    async def revoke(self, token_hash: str, now: float) -> FamilyState | None:
        """Revoke the family of a live refresh token; ``None`` if the token is not live."""
        async with self._db.transaction() as conn:
            row = await _token_and_family(conn, token_hash)
            if row is None or row["revoked_at"] is not None or row["expires_at"] <= now:
                return None
            if row["token_gen"] != row["generation"]:
                return None
            await revoke_families(conn, now, "revoked by client", "id = ?", row["id"])
            return FamilyState(row["id"], row["user_id"], row["generation"], True, now)

    async def family(self, family_id: str) -> FamilyState | None:
        row = await self._db.fetchone("SELECT * FROM token_families WHERE id = ?", (family_id,))
        return FamilyState.from_row(row) if row else None

    async def touched_since(self, since: float) -> list[FamilyState]:
        rows = await self._db.fetchall(
            "SELECT * FROM token_families WHERE touched_at >= ?", (since,)
        )
        return [FamilyState.from_row(r) for r in rows]

    async def purge(self, now: float, keep_revoked_for: float) -> int:
        """Delete expired refresh tokens and families nobody can use any more."""
        async with self._db.transaction() as conn:
            cur = await conn.execute("DELETE FROM refresh_tokens WHERE expires_at <= ?", (now,))
            deleted = cur.rowcount
            await conn.execute(
                "DELETE FROM token_families WHERE touched_at < ? AND NOT EXISTS"
                " (SELECT 1 FROM refresh_tokens t WHERE t.family_id = token_families.id)",
                (now - keep_revoked_for,),
            )
            return deleted


async def revoke_families(
    conn: Connection, now: float, reason: str, where: str, *params: object
) -> None:
    """Revoke the token families matching ``where`` (a fixed SQL condition), inside the
    caller's transaction."""
    await conn.execute(
        "UPDATE token_families SET revoked_at = ?, revoke_reason = ?, touched_at = ?"  # noqa: S608 (fixed conditions)
        f" WHERE {where}",
        (now, reason, now, *params),
    )


async def _token_and_family(conn: Connection, token_hash: str) -> Row | None:
    """A refresh token's row joined with its family's (``token_gen`` is the token's)."""
    cur = await conn.execute(
        "SELECT t.generation AS token_gen, t.expires_at, f.*"
        " FROM refresh_tokens t JOIN token_families f ON f.id = t.family_id"
        " WHERE t.token_hash = ?",
        (token_hash,),
    )
    row: Row | None = await cur.fetchone()
    return row
