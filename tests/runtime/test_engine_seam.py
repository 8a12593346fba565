"""The engine seam: Docker stays inside ``controller.runtime.docker``, engines are chosen by
name, and the database's environment references written before the seam still launch."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import docker
import pytest

import controller
from controller.app import create_app
from controller.runtime import engines
from controller.settings import Settings, SettingsError
from controller.store.db import open_database
from tests.conftest import make_settings
from tests.runtime.test_image_ownership import _images, _populate, _start, _works

ROOT = Path(controller.__file__).parent
DOCKER_PACKAGE = ROOT / "runtime" / "docker"
#: The engine wiring (the factory's registry line) and the CLI's ``image`` command.
WIRING = {
    ROOT / "runtime" / "engines.py": {"controller.runtime.docker"},
    ROOT / "__main__.py": {"controller.runtime.docker.image"},
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _docker(name: str) -> bool:
    return name == "docker" or name.startswith(("docker.", "controller.runtime.docker"))


def test_nothing_outside_the_docker_package_talks_to_docker() -> None:
    """Only the Docker package imports the Docker SDK or its own modules (the gateway, the
    image names); the factory and the CLI's image command name it, nothing else."""
    found = {
        str(path.relative_to(ROOT)): sorted(
            n
            for n in _imports(path)
            if _docker(n) and not any(n.startswith(w) for w in WIRING.get(path, ()))
        )
        for path in ROOT.rglob("*.py")
        if DOCKER_PACKAGE not in path.parents
    }
    assert {path: names for path, names in found.items() if names} == {}


def test_image_names_are_made_only_in_the_docker_package() -> None:
    made = {
        str(path.relative_to(ROOT))
        for path in ROOT.rglob("*.py")
        if DOCKER_PACKAGE not in path.parents
        and any(name in path.read_text() for name in ("o16n-snapshot", "o16n-service"))
    }
    assert made == set()


def test_an_unknown_engine_stops_the_start_with_its_name_and_the_known_ones(
    data_dir: Path,
) -> None:
    settings = make_settings(data_dir, engine="nosuch")
    with pytest.raises(SettingsError, match=r"O16N_ENGINE='nosuch' \(known: .*docker"):
        create_app(settings)


def test_the_default_engine_is_docker(data_dir: Path) -> None:
    settings = Settings.from_env({}, data_dir=data_dir, admin_password="x" * 12)
    assert settings.engine == "docker"
    assert engines.factory(settings) is engines.ENGINES["docker"]


@pytest.mark.docker
async def test_rows_holding_image_names_of_before_still_launch(
    aiohttp_client: Any, data_dir: Path
) -> None:
    """Rows written before the environment store hold the image names the old code made
    (``o16n-snapshot:<instance>-<snapshot id>``, ``o16n-service:<instance>-<row key>``): a
    restarted controller launches them as they are, and its start-up sweep keeps them."""
    settings = make_settings(data_dir, warm_pool_size=0, service_warm_pool_size=0)
    client, headers = await _start(aiohttp_client, settings)
    snapshot_id = await _populate(client, headers)
    await client.close()

    engine = docker.from_env()
    db = await open_database(settings)
    renames = {}
    try:
        async with db.transaction() as conn:
            snapshots = await (await conn.execute("SELECT image FROM snapshots")).fetchall()
            for row in snapshots:
                image = row["image"]
                renames[image] = f"o16n-snapshot:{settings.instance}-{snapshot_id.replace('-', '')}"
                await conn.execute(
                    "UPDATE snapshots SET image = ? WHERE image = ?", (renames[image], image)
                )
            services = await (await conn.execute("SELECT image, key FROM services")).fetchall()
            for row in services:
                image = row["image"]
                renames[image] = f"o16n-service:{settings.instance}-{row['key']}"
                await conn.execute(
                    "UPDATE services SET image = ? WHERE image = ?", (renames[image], image)
                )
    finally:
        await db.close()
    for new, old in renames.items():
        if new != old:
            engine.images.get(new).tag(old)
            engine.images.remove(new)
    assert len(renames) == 3

    client, headers = await _start(aiohttp_client, settings)
    await _works(client, headers, snapshot_id)
    assert _images(settings.instance) == set(renames.values())
    await client.close()
