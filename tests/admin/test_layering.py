"""``controller.admin`` is the top layer: only the app factory may import it."""

from __future__ import annotations

import ast
from pathlib import Path

import controller

ROOT = Path(controller.__file__).parent
ALLOWED = {ROOT / "app.py"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_nothing_below_admin_imports_it() -> None:
    upward = {
        str(path.relative_to(ROOT))
        for path in ROOT.rglob("*.py")
        if ROOT / "admin" not in path.parents and path not in ALLOWED
        if any(n == "controller.admin" or n.startswith("controller.admin.") for n in _imports(path))
    }
    assert upward == set()
