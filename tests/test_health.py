"""``controller.health``: ``Recent`` reuses an answer while young and checks again once
old, and callers that find it stale share one run, which outlives a caller cancelled;
``HealthProbe`` reports an engine that hangs as failed instead of waiting for it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from controller.health import HealthProbe, Recent
from controller.runtime.engines import Engine


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_an_answer_is_reused_while_young_and_checked_again_once_old() -> None:
    clock, answers = Clock(), iter(range(10))

    async def check() -> int:
        return next(answers)

    recent = Recent(check, max_age=1.0, clock=clock)
    first = await recent.get()
    clock.now += 0.99
    assert (await recent.get()) is first
    clock.now += 0.01  # one second after the first run started
    second = await recent.get()
    assert (first.value, second.value, recent.runs) == (0, 1, 2)


async def test_callers_that_find_it_stale_share_one_run() -> None:
    gate, runs = asyncio.Event(), []

    async def check() -> str:
        runs.append(1)
        await gate.wait()
        return "answer"

    recent = Recent(check, max_age=0.0)  # no reuse at all: only the sharing is left
    callers = [asyncio.create_task(recent.get()) for _ in range(16)]
    await asyncio.sleep(0)  # every caller is waiting now
    await asyncio.sleep(0)
    gate.set()
    answers = await asyncio.gather(*callers)
    assert len(runs) == 1
    assert all(answer is answers[0] for answer in answers)
    assert answers[0].value == "answer"


async def test_a_caller_cancelled_leaves_the_run_to_the_others() -> None:
    gate = asyncio.Event()

    async def check() -> str:
        await gate.wait()
        return "answer"

    recent = Recent(check, max_age=60.0)
    gone, staying = asyncio.create_task(recent.get()), asyncio.create_task(recent.get())
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    gate.set()
    assert (await staying).value == "answer"
    assert gone.cancelled() and recent.runs == 1


async def test_a_run_that_raises_is_not_reused() -> None:
    outcomes: list[Exception | str] = [RuntimeError("broken"), "answer"]

    async def check() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    recent = Recent(check, max_age=60.0)
    with pytest.raises(RuntimeError, match="broken"):
        await recent.get()
    assert (await recent.get()).value == "answer"


# --- HealthProbe ----------------------------------------------------------------------------


def _engine(about: Any, base_size: Any) -> Engine:
    """An engine with only the hooks the probe calls (it runs no containers)."""
    environments = SimpleNamespace(base="o16n-runtime:stub")
    return Engine("stub", None, environments, about=about, base_size=base_size)  # type: ignore[arg-type]


async def _never() -> Any:
    await asyncio.Event().wait()


async def _about() -> dict[str, Any]:
    return {"version": "stub"}


async def test_an_engine_that_hangs_fails_the_engine_and_the_image(tmp_path: Path) -> None:
    probe = HealthProbe(_engine(_never, _never), tmp_path, engine_timeout=0.05)
    try:
        nodes = await probe.check()
    finally:
        await probe.close()
    assert nodes["dockerEngine"]["statusCode"] == "fail"
    assert "did not answer" in nodes["dockerEngine"]["details"]["error"]
    assert nodes["runtimeImage"]["statusCode"] == "fail"
    assert nodes["disk"]["statusCode"] in ("pass", "warn")
    assert nodes["openFiles"]["details"]["open"] > 0


async def test_an_image_check_that_hangs_is_not_called_a_missing_image(tmp_path: Path) -> None:
    probe = HealthProbe(_engine(_about, _never), tmp_path, engine_timeout=0.05)
    try:
        nodes = await probe.check()
    finally:
        await probe.close()
    assert nodes["dockerEngine"]["statusCode"] == "pass"
    assert nodes["dockerEngine"]["details"]["checkedAt"]
    assert nodes["runtimeImage"]["statusCode"] == "fail"
    assert "did not answer" in nodes["runtimeImage"]["details"]["error"]
