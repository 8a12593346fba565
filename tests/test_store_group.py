"""The group's repository: controllers' rows and leases that are never held twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controller.store.db import open_database
from controller.store.group import ControllerRecord, GroupRepo
from tests.conftest import make_settings


@pytest.fixture
async def two(data_dir: Path) -> AsyncIterator[tuple[GroupRepo, GroupRepo]]:
    """Two connections to one database, as two controllers of a group have."""
    settings = make_settings(data_dir)
    first = await open_database(settings)
    try:
        second = await open_database(settings)
        try:
            yield GroupRepo(first), GroupRepo(second)
        finally:
            await second.close()
    finally:
        await first.close()


async def test_racing_controllers_never_both_hold_a_lease(two: tuple[GroupRepo, GroupRepo]) -> None:
    repos = two
    now = 1000.0
    for round_ in range(20):
        # ten contenders on two connections, all at once, at a moment the lease is free
        # (first round) or expired (every later one)
        holders = [f"c{i}" for i in range(10)]
        taken = await asyncio.gather(
            *(repos[i % 2].try_lease("purges", h, now, 10.0) for i, h in enumerate(holders))
        )
        assert sum(taken) == 1, (round_, taken)
        winner = holders[taken.index(True)]
        # while it lasts, only the winner renews it
        later = now + 5.0
        again = await asyncio.gather(
            *(repos[i % 2].try_lease("purges", h, later, 10.0) for i, h in enumerate(holders))
        )
        assert again == [h == winner for h in holders]
        leases = await repos[0].leases(later)
        assert [(lease.name, lease.holder) for lease in leases] == [("purges", winner)]
        now = later + 10.0  # the winner's renewal has expired


async def test_an_expired_lease_is_taken_over_and_a_live_one_is_not(
    two: tuple[GroupRepo, GroupRepo],
) -> None:
    a, b = two
    assert await a.try_lease("batches", "A", 100.0, 10.0)
    assert not await b.try_lease("batches", "B", 109.9, 10.0)  # still A's
    assert await b.try_lease("batches", "B", 110.0, 10.0)  # A's ran out at 110
    assert not await a.try_lease("batches", "A", 111.0, 10.0)
    assert not await a.release("batches", "A")  # no longer A's to give up
    assert await b.release("batches", "B")
    assert await a.try_lease("batches", "A", 112.0, 10.0)  # free again: taken at once
    # leases are independent of one another
    assert await b.try_lease("purges", "B", 112.0, 10.0)
    assert {(x.name, x.holder) for x in await a.leases(112.0)} == {
        ("batches", "A"),
        ("purges", "B"),
    }


async def test_heartbeat_and_forget(two: tuple[GroupRepo, GroupRepo]) -> None:
    a, b = two
    record = ControllerRecord("A", "host-a", "http://10.0.0.1:12800", 50.0, 50.0, 60.0)
    await a.register(record)
    await b.register(ControllerRecord("B", "host-b", "http://10.0.0.2:12800", 55.0, 55.0, 65.0))
    assert [c.id for c in await b.live(59.0)] == ["A", "B"]
    assert [c.id for c in await b.live(61.0)] == ["B"]  # A missed its heartbeat
    assert await a.heartbeat("A", 61.0, 10.0)
    assert [c.id for c in await b.live(62.0)] == ["A", "B"]
    (stored,) = [c for c in await b.controllers() if c.id == "A"]
    assert (stored.heartbeat_at, stored.expires_at, stored.started_at) == (61.0, 71.0, 50.0)
    assert stored.internal_url == "http://10.0.0.1:12800" and stored.name == "host-a"

    assert await a.try_lease("purges", "A", 62.0, 10.0)
    await a.forget("A")  # a clean stop: row and leases go at once
    assert [c.id for c in await b.controllers()] == ["B"]
    assert await b.try_lease("purges", "B", 62.5, 10.0)
    assert not await a.heartbeat("A", 63.0, 10.0)  # no row: the caller registers again
    await a.register(record)
    assert {c.id for c in await b.controllers()} == {"A", "B"}


async def test_rows_of_controllers_dead_long_ago_are_purged(
    two: tuple[GroupRepo, GroupRepo],
) -> None:
    a, b = two
    await a.register(ControllerRecord("A", "a", "http://10.0.0.1:12800", 0.0, 0.0, 10.0))
    await b.register(ControllerRecord("B", "b", "http://10.0.0.2:12800", 0.0, 0.0, 500.0))
    assert await b.purge(older_than=100.0) == 1  # A died at 10; B lives until 500
    assert [c.id for c in await b.controllers()] == ["B"]
