"""Where a request's time went, phase by phase, for its ``Server-Timing`` header.

A base-layer recorder, so that the layers that do the work (the agent link's sandbox, the
service pools, the session manager) can say how long their part took without knowing of
HTTP. The timing middleware starts a :class:`Timing` for the routes it times and puts it
in :data:`TIMING`; everywhere else the variable holds ``None`` and :func:`record` costs a
clock read and a context-variable read.

Phases must not overlap: only code the request's own task awaits in turn records, and the
background tasks a request starts (``TaskSupervisor.spawn``: a pool's container start, say)
run without its timing. The phase names are a contract: ``o16n admin capacity`` reads them.
"""

from __future__ import annotations

from contextvars import ContextVar
from time import perf_counter

#: The phases and their descriptions (``total`` comes last, and is no phase).
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

    __slots__ = ("phases", "start")

    def __init__(self) -> None:
        self.start = perf_counter()
        self.phases: dict[str, float] = {}

    def header(self, end: float | None = None) -> str:
        """The ``Server-Timing`` value (W3C syntax): the phases in the order first met,
        then the total, in milliseconds; phases rounded down and the total up, so that
        the phases never add up to more."""
        phases = self.phases
        names = tuple(phases)
        form = _FORMS.get(names) or _form(names)
        values = [int(seconds * 1e6) / 1000 for seconds in phases.values()]
        values.append(-int((self.start - (end or perf_counter())) * 1e6) / 1000)
        return form % tuple(values)


#: the header's format for each sequence of phases met (a handful: the code paths)
_FORMS: dict[tuple[str, ...], str] = {}


def _form(names: tuple[str, ...]) -> str:
    entries = [f'{name};dur=%.3f;desc="{PHASES.get(name, name)}"' for name in names]
    form = ", ".join([*entries, 'total;dur=%.3f;desc="total"'])
    if len(_FORMS) < 256:
        _FORMS[names] = form
    return form


#: The timing of the request being served, when its route is timed and timing is on.
TIMING: ContextVar[Timing | None] = ContextVar("o16n_timing", default=None)


def record(name: str, since: float) -> None:
    """Add the time from ``since`` (a :func:`now`) until now to phase ``name`` (one of
    :data:`PHASES`), if the request being served is timed."""
    timing = TIMING.get()
    if timing is not None:
        phases = timing.phases
        phases[name] = phases.get(name, 0.0) + perf_counter() - since
