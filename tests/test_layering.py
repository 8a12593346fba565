"""The controller's layers: every module imports only from its own layer or the ones below.

Read with ``ast``, not by importing, so every import counts: at the top, inside functions
and under ``TYPE_CHECKING``. A module belongs to the layer of the longest prefix in
``LAYERS`` that names it (its package or itself), so a new module inside a listed package
(``controller/runtime/docker/``, ``controller/services/catalogue.py``) falls in on its own;
a new top-level module must be placed below, or this test says so. No fixture, no Docker.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "controller"

#: Bottom to top. The root package (``controller/__init__.py``, the version) is its own
#: module only: its prefix does not take in the rest.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # What every layer may use: errors, settings, roles, the clock, the task supervisor,
    # the per-request timing recorder.
    (
        "base",
        (
            "controller",
            "controller.errors",
            "controller.clock",
            "controller.settings",
            "controller.roles",
            "controller.limits",
            "controller.reserved_names",
            "controller.tasks",
            "controller.timing",
            # what the metrics are (the store and the runtime time their calls with them)
            "controller.metrics",
            "controller.metrics.definitions",
            # compute node addresses: settings parse O16N_COMPUTE_NODES with them
            "controller.runtime.nodes",
        ),
    ),
    ("store", ("controller.store",)),
    # The controllers sharing the database: membership and the leases of group-wide jobs.
    # It knows the store only, so that any layer above may run a job on one controller.
    ("group", ("controller.group",)),
    # Where code runs: containers, agents, images. Below HTTP: it knows no requests.
    ("runtime", ("controller.runtime", "controller.health")),
    # Requests and responses: middlewares, bodies, JSON, agent blobs streamed to and fro.
    ("http", ("controller.http", "controller.docs", "controller.metrics.http")),
    ("auth/audit", ("controller.auth", "controller.audit", "controller.drain")),
    # The node's own pages and access log: they read what the layers below keep.
    ("node", ("controller.status", "controller.logs")),
    # /computenodes: the stored list and the engine's nodes (the engine does the work)
    ("computenodes", ("controller.computenodes",)),
    ("sessions", ("controller.sessions",)),
    ("snapshots", ("controller.snapshots",)),
    ("services", ("controller.services",)),
    ("batch", ("controller.batch",)),
    # ``GET /metrics``: it reads every layer's live objects, and checks tokens (auth)
    ("metrics", ("controller.metrics.live", "controller.metrics.routes")),
    ("admin", ("controller.admin",)),
    ("app", ("controller.app", "controller.__main__")),
]

#: Packages outside the controller, with the lowest layer that may import them.
EXTERNAL: dict[str, str] = {
    "o16n_agent": "runtime",
    "o16n_client": "app",
}

#: Modules that only the named ones (and their own package) may import, whatever the layers
#: say: the admin API is wired by the app factory alone; the agent's wire protocol is the
#: runtime's business (the HTTP layer has JSON helpers of its own).
ONLY_FROM: dict[str, tuple[str, ...]] = {
    "controller.admin": ("controller.app",),
    "o16n_agent.protocol": ("controller.runtime",),
}

RANK = {name: i for i, (name, _) in enumerate(LAYERS)}


def _prefixed(module: str, prefix: str) -> bool:
    return module == prefix or (prefix != "controller" and module.startswith(prefix + "."))


def layer_of(module: str) -> str | None:
    """The layer of a module of the controller, by its longest listed prefix."""
    found: tuple[int, str] | None = None
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            if _prefixed(module, prefix) and (found is None or len(prefix) > found[0]):
                found = (len(prefix), name)
    return None if found is None else found[1]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_of(module: str, path: Path | None = None) -> set[str]:
    """Every module ``module`` imports, anywhere in its text. ``from pkg import name``
    counts as ``pkg.name`` when that is a module of the controller, else as ``pkg``."""
    path = path or MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in MODULES else base)
    return found


def _external_layer(target: str) -> str | None:
    for prefix, layer in EXTERNAL.items():
        if _prefixed(target, prefix):
            return layer
    return None


def check(module: str, targets: set[str]) -> list[str]:
    """One line per import of ``module`` that goes up a layer or breaks ``ONLY_FROM``."""
    layer = layer_of(module)
    if layer is None:
        return [f"{module} is in no layer: add it to LAYERS in {__name__}"]
    problems = []
    for target in sorted(targets):
        for guarded, allowed in ONLY_FROM.items():
            if (
                _prefixed(target, guarded)
                and not _prefixed(module, guarded)
                and not any(_prefixed(module, a) for a in allowed)
            ):
                problems.append(f"{module} imports {target}: only {', '.join(allowed)} may")
        above = layer_of(target) if target.startswith("controller") else _external_layer(target)
        if above is not None and RANK[above] > RANK[layer]:
            problems.append(f"{module} ({layer}) imports {target} ({above}), a layer above")
    return problems


def test_every_module_imports_only_its_layer_or_below() -> None:
    problems = [line for module in MODULES for line in check(module, imports_of(module))]
    assert not problems, "\n".join(problems)


def test_the_rules_see_every_kind_of_import(tmp_path: Path) -> None:
    """The reader finds relative, nested, function-level and TYPE_CHECKING imports."""
    text = (
        "from typing import TYPE_CHECKING\n"
        "from . import errors\n"
        "from .sessions import manager\n"
        "import controller.store.db\n"
        "if TYPE_CHECKING:\n"
        "    from controller.admin.common import Role\n"
        "def f():\n"
        "    from controller.services import registry\n"
    )
    path = tmp_path / "probe.py"
    path.write_text(text)
    assert imports_of("controller.probe", path) == {
        "typing",
        "controller.errors",
        "controller.sessions.manager",
        "controller.store.db",
        "controller.admin.common",
        "controller.services.registry",
    }


@pytest.mark.parametrize(
    ("module", "target", "broken"),
    [
        ("controller.store.users", "controller.auth.roles", True),
        ("controller.http.bodies", "o16n_agent.protocol", True),
        ("controller.http.streams", "controller.runtime.agent_link", False),
        ("controller.services.swagger", "o16n_agent.codec", False),
        ("controller.store.db", "o16n_agent.codec", True),
        ("controller.sessions.manager", "controller.admin.common", True),
        ("controller.__main__", "controller.admin", True),
        ("controller.admin.users", "controller.admin.common", False),
        ("controller.app", "controller.admin.routes", False),
        ("controller.runtime.docker.engine", "controller.runtime.sandboxes", False),
        ("controller.runtime.fake", "controller.sessions.manager", True),
        ("controller.settings", "controller.http.client_address", True),
    ],
)
def test_the_rules(module: str, target: str, broken: bool) -> None:
    assert bool(check(module, {target})) is broken


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("controller", "base"),
        ("controller.runtime.docker.engine", "runtime"),
        ("controller.runtime.fake", "runtime"),
        ("controller.services.catalogue", "services"),
        ("controller.http.responses", "http"),
        ("controller.newthing", None),
    ],
)
def test_new_modules_fall_into_their_package_layer(module: str, layer: str | None) -> None:
    assert layer_of(module) == layer
