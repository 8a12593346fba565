"""Engines, chosen by name (``O16N_ENGINE``): what runs containers and keeps environments.

An engine is a :class:`~controller.runtime.containers.ContainerRuntime` and an
:class:`~controller.runtime.environments.EnvironmentStore`, plus a few optional hooks the
operator's endpoints (``/status``, ``/admin/node``, ``/admin/sessions?stats=true``, the
diagnostics) show when the engine has them. Registering a new engine is one line of
``ENGINES``: its name and an async context manager factory yielding the :class:`Engine`
(entered once at start, left at shutdown). An engine module imports this one only inside
its factory (this one imports it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from controller.runtime import docker, fake
from controller.runtime.containers import ContainerRuntime
from controller.runtime.environments import EnvironmentStore
from controller.runtime.nodes import NodeControl
from controller.settings import Settings, SettingsError

#: A status node of ``GET /status``: ``{"statusCode", "components", "details"}``.
StatusNode = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Engine:
    """What the app factory wires: the two seams and the engine's optional hooks."""

    name: str
    runtime: ContainerRuntime
    environments: EnvironmentStore
    #: The engine's own facts (``version``, ``apiVersion``, ``containersRunning``,
    #: ``storageDriver``), raising ``O16nError`` when it is unreachable: ``/status``'s
    #: ``dockerEngine`` and the diagnostics' ``engine`` step.
    about: Callable[[], Awaitable[dict[str, Any]]] | None = None
    #: Bytes of the base environment, raising ``O16nError`` when it is missing:
    #: ``/status``'s ``runtimeImage`` and the diagnostics' ``runtimeImage`` step.
    base_size: Callable[[], Awaitable[int]] | None = None
    #: Status nodes judged once at start (the Docker engine's ``runc``).
    checks: Mapping[str, StatusNode] = field(default_factory=dict)
    #: ``/admin/node``'s ``engine``, ``containers``, ``images`` sections, and the engine's
    #: disk use (``engineDisk``) when asked for (the argument).
    node: Callable[[bool], Awaitable[dict[str, Any]]] | None = None
    #: Memory and CPU of containers, by their ``engine_id`` (``None`` for one that did not
    #: answer in time).
    stats: Callable[[list[str]], Awaitable[dict[str, dict[str, Any] | None]]] | None = None
    #: The compute nodes, for an engine that spreads containers over several
    #: (``/computenodes``, ``/status``'s ``computeNodes``, ``/admin/nodes``).
    nodes: NodeControl | None = None


#: The app's engine.
ENGINE = web.AppKey("engine", Engine)

EngineFactory = Callable[[Settings], AbstractAsyncContextManager[Engine]]

ENGINES: dict[str, EngineFactory] = {
    "docker": docker.open_engine,
    "fake": fake.open_engine,  # no isolation: tests and development (its docstring)
}


def factory(settings: Settings) -> EngineFactory:
    """The factory of ``settings.engine``; an unknown name is a configuration error."""
    found = ENGINES.get(settings.engine)
    if found is None:
        known = ", ".join(sorted(ENGINES))
        raise SettingsError(f"unknown engine O16N_ENGINE={settings.engine!r} (known: {known})")
    return found


def open_engine(settings: Settings) -> AbstractAsyncContextManager[Engine]:
    """The engine ``O16N_ENGINE`` names, to enter at start."""
    return factory(settings)(settings)
