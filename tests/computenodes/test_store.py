"""The compute node list in SQLite: order kept, who and when kept across changes, and every
change hands back the list before it so that it can be put back."""

from __future__ import annotations

from pathlib import Path

from controller.store.db import open_database
from controller.store.nodes import NodesRepo
from tests.conftest import make_settings

A, B, C = "ssh://o16n@a", "ssh://o16n@b", "unix:///run/c.sock"


async def test_replace_add_remove_keep_order_and_return_the_list_before(tmp_path: Path) -> None:
    db = await open_database(make_settings(tmp_path))
    try:
        repo = NodesRepo(db)
        assert await repo.entries() == []
        assert await repo.replace([B, A], "admin") == []
        assert await repo.entries() == [B, A]
        before = await repo.add([C, A, C], "ops")
        assert [n.entry for n in before] == [B, A]
        assert await repo.entries() == [B, A, C]
        assert {n.entry: n.added_by for n in await repo.nodes()} == {
            B: "admin",
            A: "admin",
            C: "ops",
        }
        before = await repo.remove([A, "ssh://o16n@missing"])
        assert [n.entry for n in before] == [B, A, C]
        assert await repo.entries() == [B, C]
        await repo.add([A], "ops")
        assert await repo.entries() == [B, C, A]  # appended at the end
        kept = {n.entry: n for n in await repo.nodes()}
        await repo.replace([C, B], "settings")
        nodes = await repo.nodes()
        assert [n.entry for n in nodes] == [C, B]
        assert nodes[0] == kept[C] and nodes[1] == kept[B]  # who and when kept
        await repo.restore(before)
        assert await repo.nodes() == before
    finally:
        await db.close()


async def test_the_list_survives_a_restart(tmp_path: Path) -> None:
    db = await open_database(make_settings(tmp_path))
    await NodesRepo(db).replace([A, C], "admin")
    await db.close()
    db = await open_database(make_settings(tmp_path))
    try:
        assert await NodesRepo(db).entries() == [A, C]
    finally:
        await db.close()
