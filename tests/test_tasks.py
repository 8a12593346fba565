"""The task supervisor's shutdown: a grace for tasks that end by themselves, then cancel."""

from __future__ import annotations

import asyncio

from controller.tasks import TaskSupervisor


async def test_close_lets_tasks_end_within_the_grace_and_cancels_the_rest() -> None:
    tasks = TaskSupervisor()
    quick = tasks.spawn("quick", asyncio.sleep(0.05, result="done"))
    slow = tasks.spawn("slow", asyncio.sleep(60))
    await tasks.close(grace=0.5)
    assert quick.result() == "done"  # not cancelled: it ended within the grace
    assert slow.cancelled()


async def test_close_without_grace_cancels_at_once() -> None:
    tasks = TaskSupervisor()
    task = tasks.spawn("quick", asyncio.sleep(0.05))
    await tasks.close()
    assert task.cancelled()
