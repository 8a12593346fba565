"""Refresh-token housekeeping in the store."""

from __future__ import annotations

from pathlib import Path

from controller.roles import Role
from controller.store.db import open_database
from controller.store.tokens import RotateOutcome, TokensRepo
from controller.store.users import UsersRepo
from tests.conftest import make_settings


async def test_purge_forgets_what_nobody_can_use(data_dir: Path) -> None:
    db = await open_database(make_settings(data_dir))
    try:
        user = await UsersRepo(db).add("u", "hash", Role.READER)
        tokens = TokensRepo(db)
        await tokens.start_family("fam-old", user.id, "h-old", now=1000.0, expires_at=2000.0)
        await tokens.start_family("fam-live", user.id, "h-live", now=1000.0, expires_at=9000.0)
        assert await tokens.purge(now=5000.0, keep_revoked_for=3600.0) == 1
        assert (
            await tokens.rotate("h-old", "x", 5000.0, 100.0, 1e6)
        ).outcome is RotateOutcome.UNKNOWN
        result = await tokens.rotate("h-live", "h-next", 5000.0, 100.0, 1e6)
        assert result.outcome is RotateOutcome.ROTATED
        assert {f.id for f in await tokens.touched_since(0)} == {"fam-live"}
    finally:
        await db.close()
