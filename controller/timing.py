"""Where a request's time went, phase by phase, for its ``Server-Timing`` header.

A base-layer recorder, so that the layers that do the work (the agent link's sandbox, the
service pools, the session manager) can say how long their part took without knowing of
HTTP. The timing middleware starts a :class:`Timing` for the routes it times and puts it
in :data:`TIMING`; everywhere else the variable holds ``None`` and :func:`record` costs a
clock read and a context-variable read.

Phases are recorded by the request's own task only: a task it starts (a pool's container
start, say) copies the context and would otherwise write into the request's timing while
it goes on, overlapping the phases the request measures itself. The phase names are a
contract: ``o16n admin capacity`` reads them.
"""

from __future__ import annotations

import asyncio
import math
from contextvars import ContextVar
from time import perf_counter

#: The phases, in the order they are sent; ``total`` comes last.
PHASES: dict[str, str] = {
    "auth": "authentication",
    "queue": "waiting for a container in the service's queue",
    "acquire": "container acquire or start",
    "restore": "workspace restore",
    "exec": "execution in the container",
    "encode": "shaping and encoding the answer",
}

now = perf_counter


class Timing:
    """The phases of one request, in seconds (a phase met twice adds up)."""

    __slots__ = ("_owner", "phases", "start")

    def __init__(self) -> None:
        self.start = perf_counter()
        self.phases: dict[str, float] = {}
        self._owner = asyncio.current_task()

    def add(self, name: str, seconds: float) -> None:
        if asyncio.current_task() is self._owner:
            self.phases[name] = self.phases.get(name, 0.0) + seconds

    def header(self, end: float | None = None) -> str:
        """The ``Server-Timing`` value (W3C syntax), durations in milliseconds: phases
        rounded down and the total up, so that the phases never add up to more."""
        total = math.ceil(((end if end is not None else perf_counter()) - self.start) * 1e6)
        parts = [
            f'{name};dur={math.floor(self.phases[name] * 1e6) / 1000:.3f};desc="{desc}"'
            for name, desc in PHASES.items()
            if name in self.phases
        ]
        parts.append(f'total;dur={total / 1000:.3f};desc="total"')
        return ", ".join(parts)


#: The timing of the request being served, when its route is timed and timing is on.
TIMING: ContextVar[Timing | None] = ContextVar("o16n_timing", default=None)


def record(name: str, since: float) -> None:
    """Add the time from ``since`` (a :func:`now`) until now to phase ``name``, if the
    request being served is timed."""
    timing = TIMING.get()
    if timing is not None:
        timing.add(name, perf_counter() - since)
