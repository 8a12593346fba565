"""Which of a pool's new containers may take a pre-started one: only those a request waits
for, so one publish leaves the services' warm pool to the next (pool logic alone; the
real containers are in test_pools.py and test_consume.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from controller.errors import ServiceUnavailableError
from controller.services.pool import ServicePool


class FakeSandbox:
    """What the pool looks at: whether the agent link is closed."""

    def __init__(self) -> None:
        self.link = SimpleNamespace(closed=False)


class Launches:
    def __init__(self) -> None:
        self.urgent: list[bool] = []

    async def __call__(self, urgent: bool) -> Any:
        self.urgent.append(urgent)
        return FakeSandbox()


def _pool(
    launch: Launches, tasks: set[asyncio.Task[Any]], queue_wait: float = 5, **sizes: int
) -> ServicePool:
    async def destroy(sandbox: Any) -> None:
        pass

    def spawn(name: str, coro: Any) -> None:
        tasks.add(asyncio.create_task(coro, name=name))

    return ServicePool(
        "S/1", launch, destroy, spawn, queue_max=10, queue_wait=queue_wait, idle_timeout=60, **sizes
    )


async def test_only_the_first_of_the_initial_fill_is_urgent() -> None:
    launch, tasks = Launches(), set[asyncio.Task[Any]]()
    pool = _pool(launch, tasks, initial=3, maximum=4)
    pool.warm()
    await asyncio.gather(*tasks)
    assert launch.urgent == [True, False, False]
    assert pool.ready == 3


async def test_growth_for_waiting_requests_is_urgent() -> None:
    launch, tasks = Launches(), set[asyncio.Task[Any]]()
    pool = _pool(launch, tasks, initial=1, maximum=3)
    pool.warm()
    await asyncio.gather(*tasks)
    held = [await pool.acquire()]
    held += await asyncio.gather(pool.acquire(), pool.acquire())  # both wait for a new one
    assert launch.urgent == [True, True, True]
    for sandbox in held:
        pool.release(sandbox)
    assert pool.ready == 3


async def test_an_empty_pool_without_initial_containers_starts_nothing() -> None:
    launch, tasks = Launches(), set[asyncio.Task[Any]]()
    pool = _pool(launch, tasks, initial=0, maximum=2)
    pool.warm()
    await asyncio.gather(*tasks)
    assert launch.urgent == []


async def test_a_container_handed_to_a_cancelled_waiter_goes_back() -> None:
    launch, tasks = Launches(), set[asyncio.Task[Any]]()
    pool = _pool(launch, tasks, initial=1, maximum=1)
    pool.warm()
    await asyncio.gather(*tasks)
    held = await pool.acquire()
    waiting = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)  # it waits in the queue
    pool.release(held)  # handed to the waiter...
    waiting.cancel()  # ...which is cancelled before it runs again
    await asyncio.gather(waiting, return_exceptions=True)
    assert (pool.ready, pool.busy) == (1, 0)
    assert await pool.acquire() is held


async def test_a_request_that_waits_too_long_is_refused_and_leaves_the_queue() -> None:
    launch, tasks = Launches(), set[asyncio.Task[Any]]()
    pool = _pool(launch, tasks, queue_wait=0.05, initial=1, maximum=1)
    pool.warm()
    await asyncio.gather(*tasks)
    held = await pool.acquire()
    with pytest.raises(ServiceUnavailableError, match=r"became free within 0\.05 s"):
        await pool.acquire()
    assert (pool.queued, pool.rejected) == (0, 1)
    pool.release(held)  # nobody waits for it any more: it goes back to the idle
    assert (pool.ready, pool.busy) == (1, 0)


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    launch, tasks = Launches(), set[asyncio.Task[Any]]()
    pool = _pool(launch, tasks, initial=1, maximum=1)
    pool.warm()
    await asyncio.gather(*tasks)
    held = await pool.acquire()
    waiting = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0)
    assert pool.queued == 1
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert pool.queued == 0
    pool.release(held)
    assert pool.ready == 1
