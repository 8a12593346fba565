"""Group membership: controllers sharing one database run a group-wide job on one of them.

The first tests drive ``Membership`` directly on two connections to one database (two
controllers), with a short lease; the last ones start two apps on one data directory, the
way a restart test starts two apps on one database.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from controller.app import create_app
from controller.auth.directory import Directory
from controller.auth.service import AUTH
from controller.batch.runner import BATCHES
from controller.errors import StoreBusy
from controller.group.membership import BATCHES as BATCHES_LEASE
from controller.group.membership import MEMBERSHIP, PURGES, Membership, internal_url
from controller.sessions.manager import SESSIONS
from controller.store.db import DB, Database, open_database
from controller.store.group import GroupRepo
from tests.batch.test_batch import first_progress, publish_doubler, start, wait_done
from tests.conftest import bearer, login, make_settings

LEASE = 1.2  # short, but its third (a beat's time limit) is not a loaded machine's hiccup


@pytest.fixture
async def dbs(data_dir: Path) -> AsyncIterator[tuple[Database, Database]]:
    settings = make_settings(data_dir)
    first = await open_database(settings)
    try:
        second = await open_database(settings)
        try:
            yield first, second
        finally:
            await second.close()
    finally:
        await first.close()


class Leaders:
    """Who runs the job now, checking that it is never two at once."""

    def __init__(self) -> None:
        self.running: set[str] = set()
        self.ran: list[str] = []
        self.overlaps: list[tuple[str, set[str]]] = []

    def job(self, member: Membership) -> Callable[[], Any]:
        async def work() -> None:
            if self.running:  # checked by the test: a failure here would only be logged
                self.overlaps.append((member.id, set(self.running)))
            self.running.add(member.id)
            self.ran.append(member.id)
            try:
                await asyncio.Event().wait()
            finally:
                self.running.discard(member.id)

        return work

    async def wait_for(self, member: Membership, within: float) -> float:
        """Seconds until ``member`` runs the job (fails after ``within``)."""
        start = time.monotonic()
        while self.running != {member.id}:
            assert time.monotonic() - start < within, f"{member.id} did not take over"
            await asyncio.sleep(0.02)
        assert self.overlaps == []
        return time.monotonic() - start


async def _stop(*tasks: asyncio.Task[Any]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_one_member_runs_the_job_and_a_dead_ones_lease_is_taken_after_it_expires(
    dbs: tuple[Database, Database],
) -> None:
    a = Membership(GroupRepo(dbs[0]), "a", "http://a:1", LEASE)
    b = Membership(GroupRepo(dbs[1]), "b", "http://b:1", LEASE)
    await a.join()
    await b.join()
    leaders = Leaders()
    a_beat = asyncio.create_task(a.run())
    a_lead = asyncio.create_task(a.run_as_leader("job", leaders.job(a)))
    await leaders.wait_for(a, within=LEASE * 2)
    b_beat = asyncio.create_task(b.run())
    b_lead = asyncio.create_task(b.run_as_leader("job", leaders.job(b)))
    try:
        await asyncio.sleep(LEASE * 2)  # b beats several times meanwhile: a keeps it
        assert leaders.ran == [a.id] and a.holds("job") and not b.holds("job")
        assert {m.id for m in await b.members()} == {a.id, b.id}
        assert not await a.alone()

        # a "dies": its heartbeat stops, no clean leave. Its own job stops when the lease
        # lapses there (2/3 of it); b takes it once it has expired in the database
        await _stop(a_beat)
        took = await leaders.wait_for(b, within=LEASE * 3)
        assert took >= LEASE * 0.5  # not before a's lease ran out
        assert leaders.ran == [a.id, b.id] and not a.holds("job")
        await asyncio.sleep(LEASE)
        assert [m.id for m in await b.members()] == [b.id] and await b.alone()
    finally:
        await _stop(a_lead, b_lead, b_beat)
        assert leaders.running == set() and leaders.overlaps == []


async def test_a_clean_stop_hands_the_lease_over_at_the_next_beat(
    dbs: tuple[Database, Database],
) -> None:
    lease = 3.0  # the shortest O16N_LEASE_SECONDS: a beat a second
    a = Membership(GroupRepo(dbs[0]), "a", "http://a:1", lease)
    b = Membership(GroupRepo(dbs[1]), "b", "http://b:1", lease)
    await a.join()
    await b.join()
    assert await a.acquire("job") and not await b.acquire("job")
    leaders = Leaders()
    tasks = [
        asyncio.create_task(a.run()),
        asyncio.create_task(b.run()),
        asyncio.create_task(b.run_as_leader("job", leaders.job(b))),
    ]
    a_lead = asyncio.create_task(a.run_as_leader("job", leaders.job(a)))
    try:
        await leaders.wait_for(a, within=1.0)
        await _stop(a_lead, tasks[0])
        await a.leave()  # its row and leases go now, not when they would expire
        took = await leaders.wait_for(b, within=lease / 3 + 1.0)
        assert took < lease * HOLD_MARGIN
        assert [m.id for m in await b.members()] == [b.id]
    finally:
        await _stop(*tasks)


HOLD_MARGIN = 2 / 3  # a takeover after a clean stop is sooner than any expiry


async def test_a_member_whose_row_was_lost_registers_again(
    dbs: tuple[Database, Database],
) -> None:
    a = Membership(GroupRepo(dbs[0]), "a", "http://a:1", LEASE)
    await a.join()
    await GroupRepo(dbs[1]).forget(a.id)  # an operator's clean-up, say
    beat = asyncio.create_task(a.run())
    try:
        await asyncio.sleep(LEASE / 3 + 0.2)
        assert [m.id for m in await a.members()] == [a.id]
    finally:
        await _stop(beat)


async def test_the_token_and_audit_purges_run_only_where_purge_here_says(
    dbs: tuple[Database, Database],
) -> None:
    purged: list[str] = []
    watches = []
    for name, db, here in (("holder", dbs[0], True), ("other", dbs[1], False)):
        directory = Directory(db, access_ttl=60)
        directory.purge_here = lambda here=here: here  # type: ignore[misc]

        async def purge(name: str = name) -> None:
            purged.append(name)

        directory.purgers.append(purge)
        watches.append(asyncio.create_task(directory.watch(interval=0.05, purge_every=0.1)))
    try:
        await asyncio.sleep(0.6)
    finally:
        await _stop(*watches)
    assert purged and set(purged) == {"holder"}


async def test_a_member_that_left_stays_gone_while_its_heartbeat_runs_on(
    dbs: tuple[Database, Database],
) -> None:
    """A start that fails half way leaves the group without stopping its tasks."""
    a = Membership(GroupRepo(dbs[0]), "a", "http://a:1", LEASE)
    await a.join()
    assert await a.acquire("job")
    beat = asyncio.create_task(a.run())
    try:
        await a.leave()
        await asyncio.sleep(LEASE)  # beats meanwhile
        assert await a.members() == [] and not a.holds("job")
        assert not await a.acquire("job")
        assert await GroupRepo(dbs[1]).leases(time.time()) == []
    finally:
        await _stop(beat)


def test_the_internal_url(data_dir: Path) -> None:
    assert internal_url(make_settings(data_dir, port=8123)) == "http://127.0.0.1:8123"
    everywhere = internal_url(make_settings(data_dir, host="0.0.0.0", port=1))
    assert everywhere.startswith("http://") and "0.0.0.0" not in everywhere
    assert internal_url(make_settings(data_dir, host="::1", port=2)) == "http://[::1]:2"
    given = make_settings(data_dir, internal_url="http://web-1.internal:12800/")
    assert internal_url(given) == "http://web-1.internal:12800"
    for bad in ("web-1:12800", "http://web-1/path", "ftp://web-1", "http://u@web-1"):
        with pytest.raises(ValueError, match="O16N_INTERNAL_URL"):
            make_settings(data_dir, internal_url=bad)


# --- two apps on one database ---------------------------------------------------------------


async def _until(check: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "not within the time given"
        await asyncio.sleep(0.05)


async def test_two_controllers_run_the_groups_jobs_once_and_hand_them_over(
    aiohttp_client: Any, data_dir: Path
) -> None:
    first = await aiohttp_client(create_app(make_settings(data_dir, lease_seconds=3)))
    a = first.app[MEMBERSHIP]
    await _until(lambda: a.held() == [BATCHES_LEASE, PURGES], within=2.0)
    second = await aiohttp_client(create_app(make_settings(data_dir, lease_seconds=3)))
    b = second.app[MEMBERSHIP]
    await asyncio.sleep(1.5)  # beats of both
    assert a.held() == [BATCHES_LEASE, PURGES] and b.held() == []
    # the purges of shared rows run on the holder only; each closes its own idle sessions
    for app, here in ((first.app, True), (second.app, False)):
        assert app[AUTH].directory.purge_here() is here
        assert app[SESSIONS].purge_here() is here
    assert a.id != b.id and {m.id for m in await b.members()} == {a.id, b.id}

    # the Owner's view of the group, from either controller
    headers = bearer((await login(second))["access_token"])
    resp = await second.get("/admin/controllers", headers=headers)
    assert resp.status == 200, await resp.text()
    listed = {c["id"]: c for c in (await resp.json())["controllers"]}
    assert listed[a.id]["leases"] == [BATCHES_LEASE, PURGES] and listed[b.id]["leases"] == []
    assert listed[b.id]["self"] and not listed[a.id]["self"] and listed[a.id]["alive"]

    await first.close()  # a clean stop: the other takes over at its next beat
    await _until(lambda: b.held() == [BATCHES_LEASE, PURGES], within=3.0)
    assert second.app[AUTH].directory.purge_here() and second.app[SESSIONS].purge_here()
    assert [m.id for m in await b.members()] == [b.id]


async def test_a_batch_recorded_anywhere_runs_on_the_lease_holder_and_moves_with_it(
    aiohttp_client: Any, data_dir: Path
) -> None:
    first = await aiohttp_client(
        create_app(make_settings(data_dir, lease_seconds=3, service_pool_initial=0))
    )
    headers = bearer((await login(first))["access_token"])
    await publish_doubler(first, headers)  # before the second starts: it loads it then
    second = await aiohttp_client(
        create_app(make_settings(data_dir, lease_seconds=3, service_pool_initial=0))
    )
    assert first.app[MEMBERSHIP].held() == [BATCHES_LEASE, PURGES]

    # recorded by the second, run by the first (the lease holder)
    records = [{"x": i, "pause": 0.2} for i in range(12)]
    batch_id = (await start(second, headers, records, "?parallelCount=1"))["batchExecutionId"]
    await first_progress(second, headers, batch_id)
    assert batch_id in first.app[BATCHES]._jobs and not second.app[BATCHES]._jobs

    # the holder stops: the other resumes the records not done
    await first.close()
    status = await wait_done(second, headers, batch_id)
    assert status["state"] == "Complete" and status["completedItemCount"] == 12
    assert [r["outputParameters"]["y"] for r in status["batchExecutionResults"]] == [
        i * 2 for i in range(12)
    ]


async def test_a_batch_cancelled_on_another_controller_stops_on_the_holder(
    aiohttp_client: Any, data_dir: Path
) -> None:
    first = await aiohttp_client(
        create_app(make_settings(data_dir, lease_seconds=3, service_pool_initial=0))
    )
    headers = bearer((await login(first))["access_token"])
    await publish_doubler(first, headers)
    second = await aiohttp_client(
        create_app(make_settings(data_dir, lease_seconds=3, service_pool_initial=0))
    )
    records = [{"x": i, "pause": 0.3} for i in range(30)]
    batch_id = (await start(first, headers, records, "?parallelCount=1"))["batchExecutionId"]
    await first_progress(first, headers, batch_id)
    job = first.app[BATCHES]._jobs[batch_id]
    assert job.task is not None
    resp = await second.delete(f"/api/Batchy/1/batch/{batch_id}", headers=headers)
    assert resp.status == 200
    await _until(job.task.done, within=3.0)  # stopped, not left running its records
    assert job.task.cancelled() and batch_id not in first.app[BATCHES]._jobs
    resp = await first.get(f"/api/Batchy/1/batch/{batch_id}", headers=headers)
    assert resp.status == 404  # cancelled: gone, and not brought back as InProgress


async def test_a_batch_being_cancelled_is_not_resumed_meanwhile(
    aiohttp_client: Any, data_dir: Path
) -> None:
    """The lease holder looks for batches to resume every second: one whose cancel is on
    its way to the database must not be taken for one."""
    client = await aiohttp_client(create_app(make_settings(data_dir, service_pool_initial=0)))
    headers = bearer((await login(client))["access_token"])
    await publish_doubler(client, headers)
    records = [{"x": i, "pause": 0.3} for i in range(30)]
    batch_id = (await start(client, headers, records, "?parallelCount=1"))["batchExecutionId"]
    await first_progress(client, headers, batch_id)
    runner = client.app[BATCHES]
    job = runner._jobs[batch_id]
    repo = runner._repo
    delete, release = repo.delete, asyncio.Event()

    async def slow_delete(batch: str, state: str) -> None:
        await release.wait()  # a busy database
        await delete(batch, state)

    repo.delete = slow_delete  # type: ignore[method-assign]
    cancel = asyncio.create_task(client.delete(f"/api/Batchy/1/batch/{batch_id}", headers=headers))
    try:
        await asyncio.sleep(1.5)  # the lead looks at least once meanwhile
        assert runner._jobs.get(batch_id) in (None, job)  # never a second run of it
    finally:
        release.set()
        resp = await cancel
    assert resp.status == 200
    assert job.task is not None
    await _until(job.task.done, within=3.0)
    assert batch_id not in runner._jobs


async def test_the_start_up_sweep_keeps_fresh_files_while_another_controller_lives(
    aiohttp_client: Any, data_dir: Path
) -> None:
    """At start, every snapshot file no row names is a leftover only for a controller
    alone: another live one (sharing the files) may be writing it."""
    first = await aiohttp_client(create_app(make_settings(data_dir, lease_seconds=3)))
    folder = data_dir / "snapshots"
    folder.mkdir(exist_ok=True)
    being_written = folder / "being-written.tar.tmp"
    being_written.write_bytes(b"a snapshot on its way")
    second = await aiohttp_client(create_app(make_settings(data_dir, lease_seconds=3)))
    assert being_written.exists()
    await second.close()
    await first.close()
    alone = await aiohttp_client(create_app(make_settings(data_dir, lease_seconds=3)))
    assert not being_written.exists()
    await alone.close()


async def test_old_dead_sessions_rows_are_purged_by_the_lease_holder_only(
    aiohttp_client: Any, data_dir: Path
) -> None:
    first = await aiohttp_client(create_app(make_settings(data_dir, lease_seconds=3)))
    await _until(lambda: PURGES in first.app[MEMBERSHIP].held(), within=2.0)
    second = await aiohttp_client(create_app(make_settings(data_dir, lease_seconds=3)))
    db = first.app[DB]
    await db.execute(
        "INSERT INTO sessions (id, name, owner_id, runtime, container_key, container_id,"
        " state, dead_reason, created_at, last_used_at)"
        " VALUES ('old', 'old', 1, 'Python', 'k', 'c', 'dead', 'idle', 0, 0)"
    )

    async def rows() -> int:
        row = await db.fetchone("SELECT COUNT(*) FROM sessions WHERE id = 'old'")
        return int(row[0]) if row else 0

    await second.app[SESSIONS].reap_idle()  # closes its own idle sessions, purges nothing
    assert await rows() == 1
    await first.app[SESSIONS].reap_idle()
    assert await rows() == 0


async def test_a_failed_look_for_batches_leaves_the_running_ones_alone(
    aiohttp_client: Any, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lease holder looks for batches every second: one look the database fails must
    not cancel (and restart from scratch) every batch it runs."""
    client = await aiohttp_client(
        create_app(make_settings(data_dir, lease_seconds=3, service_pool_initial=0))
    )
    headers = bearer((await login(client))["access_token"])
    await publish_doubler(client, headers)
    records = [{"x": i, "pause": 0.3} for i in range(8)]
    batch_id = (await start(client, headers, records, "?parallelCount=1"))["batchExecutionId"]
    await first_progress(client, headers, batch_id)
    runner = client.app[BATCHES]
    job = runner._jobs[batch_id]
    real = runner._repo.unfinished
    failed = asyncio.Event()

    async def once() -> Any:
        if not failed.is_set():
            failed.set()
            raise StoreBusy("the database is busy; try again shortly")
        return await real()

    monkeypatch.setattr(runner._repo, "unfinished", once)
    await asyncio.wait_for(failed.wait(), 5)
    status = await wait_done(client, headers, batch_id)
    assert status["state"] == "Complete" and status["completedItemCount"] == 8
    assert job.task is not None and not job.task.cancelled()


async def test_a_batch_that_ended_is_never_started_again(dbs: tuple[Database, Database]) -> None:
    """The holder read a batch as unfinished just before it ended: starting it then must
    not put a finished (or failed) batch back to work."""
    from controller.store.batches import BatchesRepo

    repo = BatchesRepo(dbs[0])
    db = dbs[0]
    await db.execute(
        "INSERT INTO users (username, password_hash, role, created_at, updated_at)"
        " VALUES ('u', 'x', 'Owner', 0, 0)"
    )
    await db.execute(
        "INSERT INTO services (name, version, key, publisher_id, created_at, creation_time,"
        " runtime, code, inputs, outputs, output_files, image)"
        " VALUES ('s', '1', 'k', 1, 0, '', 'python', 'y=1', '[]', '[]', '[]', 'i')"
    )
    await db.execute(
        "INSERT INTO batches (id, service_name, service_version, owner_id, parallel_count,"
        " state, total, created_at) VALUES ('b', 's', '1', 1, 1, 'Pending', 0, 0)"
    )
    assert await repo.start("b")
    await repo.set_state("b", "Failed", "boom")
    assert not await repo.start("b")
    row = await db.fetchone("SELECT state, error FROM batches WHERE id = 'b'")
    assert row is not None and (row["state"], row["error"]) == ("Failed", "boom")


async def test_a_renewal_refused_stops_the_job_at_once(
    dbs: tuple[Database, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A beat that finds the lease taken (another holder after a clock step, say) stops
    the work then, not when the hold it had runs out."""
    a = Membership(GroupRepo(dbs[0]), "a", "http://a:1", 30.0)  # a 20 s hold
    await a.join()
    stopped = asyncio.Event()

    async def job() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    assert await a.acquire("job")
    lead = asyncio.create_task(a.run_as_leader("job", job))
    try:
        await asyncio.sleep(0.2)  # running
        assert not stopped.is_set()

        async def refused(*args: Any) -> bool:
            return False

        monkeypatch.setattr(a._repo, "try_lease", refused)
        await a._beat()
        await asyncio.wait_for(stopped.wait(), 2)
    finally:
        await _stop(lead)
