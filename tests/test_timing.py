"""The per-request timing recorder (``controller.timing``): its header never lets the
phases add up to more than the total, and background tasks do not write into it."""

from __future__ import annotations

import asyncio
import random

from controller.tasks import TaskSupervisor
from controller.timing import TIMING, Timing, now, record
from tests.http.test_server_timing import parse


def test_phases_round_down_and_total_up() -> None:
    rng = random.Random(13)
    for _ in range(1000):
        timing = Timing()
        shares = [rng.random() for _ in range(4)]
        total = rng.uniform(0.0001, 2.0)
        for name, share in zip(("auth", "acquire", "exec", "encode"), shares, strict=True):
            timing.phases[name] = total * share / sum(shares)
        durations = parse(timing.header(end=timing.start + total))
        assert list(durations) == ["auth", "acquire", "exec", "encode", "total"]
        phases = sum(v for k, v in durations.items() if k != "total")
        assert round(phases, 3) <= durations["total"]


def test_nothing_is_recorded_without_a_timing() -> None:
    assert TIMING.get() is None
    record("exec", now())  # no error, nothing kept anywhere


async def test_spawned_tasks_do_not_record_into_the_request() -> None:
    """A pool's container start, spawned by a timed request, goes on beside it: what it
    records would overlap the request's own phases."""
    timing = Timing()
    TIMING.set(timing)
    tasks = TaskSupervisor()

    async def background() -> None:
        started = now()
        await asyncio.sleep(0.01)
        record("acquire", started)

    await tasks.spawn("start", background())
    started = now()
    record("exec", started)
    assert set(timing.phases) == {"exec"}
    await tasks.close()
