"""Two instances on one engine whose names share a prefix (``X`` and ``X-c``): each one's
restart reaps only its own images, told by exact labels, never by a name prefix."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

import docker
import pytest
from aiohttp.test_utils import TestClient

from controller.app import create_app
from controller.settings import Settings
from tests.conftest import bearer, login, make_settings
from tests.services.conftest import consume, publish
from tests.sessions.conftest import execute, new_session
from tests.snapshots.test_snapshots import snapshot

pytestmark = pytest.mark.docker


async def _start(aiohttp_client: Any, settings: Settings) -> tuple[TestClient[Any, Any], Any]:
    client = await aiohttp_client(create_app(settings))
    return client, bearer((await login(client))["access_token"])


async def _populate(client: TestClient[Any, Any], headers: dict[str, str]) -> str:
    """A snapshot whose container changed its image, and two services: one published from
    the snapshot, one on the bare runtime."""
    session_id = await new_session(client, headers)
    await execute(client, headers, session_id, "k = 41\nopen('/tmp/changed', 'w').write('x')")
    snapshot_id = await snapshot(client, headers, session_id)
    await client.delete(f"/sessions/{session_id}", headers=headers)
    body = {
        "code": "y = k + x",
        "inputParameterDefinitions": [{"name": "x", "type": "integer"}],
        "outputParameterDefinitions": [{"name": "y", "type": "integer"}],
    }
    await publish(client, headers, "FromSnap", "1", snapshotId=snapshot_id, **body)
    await publish(client, headers, "Bare", "1", code="y = x * 2", **{
        k: v for k, v in body.items() if k != "code"
    })  # fmt: skip
    return snapshot_id


async def _works(client: TestClient[Any, Any], headers: dict[str, str], snapshot_id: str) -> None:
    resp = await client.post("/sessions", json={"snapshotId": snapshot_id}, headers=headers)
    assert resp.status == 201, await resp.text()
    session_id = (await resp.json())["sessionId"]
    result = await execute(client, headers, session_id, "k += 1", outputParameters=["k"])
    assert result["outputParameters"] == [{"name": "k", "value": 42}]
    assert (await consume(client, headers, "FromSnap", "1", {"x": 1}))["outputParameters"] == {
        "y": 42
    }
    assert (await consume(client, headers, "Bare", "1", {"x": 21}))["outputParameters"] == {"y": 42}


def _images(instance: str) -> set[str]:
    engine = docker.from_env()
    return {
        tag
        for image in engine.images.list(filters={"label": f"o16n.instance={instance}"})
        for tag in image.tags
    }


async def test_instances_sharing_a_name_prefix_keep_their_own_images(
    aiohttp_client: Any, data_dir: Path
) -> None:
    first = make_settings(data_dir, warm_pool_size=0, service_warm_pool_size=0)
    other_dir = Path(tempfile.mkdtemp(prefix="o16n-", dir="/tmp"))
    second = make_settings(
        other_dir, instance=first.instance + "-c", warm_pool_size=0, service_warm_pool_size=0
    )

    try:
        await _restart_both(aiohttp_client, first, second)
    finally:
        shutil.rmtree(other_dir, ignore_errors=True)


async def _restart_both(aiohttp_client: Any, first: Settings, second: Settings) -> None:
    a, a_headers = await _start(aiohttp_client, first)
    b, b_headers = await _start(aiohttp_client, second)
    a_snapshot = await _populate(a, a_headers)
    b_snapshot = await _populate(b, b_headers)
    await a.close()
    await b.close()

    # Each restart reaps; the shorter name first, as it was the one that reaped the other's.
    a, a_headers = await _start(aiohttp_client, first)
    b, b_headers = await _start(aiohttp_client, second)
    await _works(b, b_headers, b_snapshot)
    await _works(a, a_headers, a_snapshot)
    await a.close()
    await b.close()
    for instance in (first.instance, second.instance):  # labelled exactly: a snapshot, 2 services
        assert len(_images(instance)) == 3


async def test_images_left_unrecorded_are_reaped_and_old_unlabelled_ones_kept(
    aiohttp_client: Any, data_dir: Path
) -> None:
    """An image of this instance that no row names (a crash between making and recording
    it) goes at the next start; an image made before images were labelled (a plain second
    name of the runtime image) that a service uses stays and still serves."""
    settings = make_settings(data_dir, warm_pool_size=0, service_warm_pool_size=0)
    client, headers = await _start(aiohttp_client, settings)
    await publish(
        client,
        headers,
        "Old",
        "1",
        code="y = x * 2",
        inputParameterDefinitions=[{"name": "x", "type": "integer"}],
        outputParameterDefinitions=[{"name": "y", "type": "integer"}],
    )
    await client.close()
    engine = docker.from_env()
    [service_image] = _images(settings.instance)
    engine.images.remove(service_image)
    engine.images.get(settings.runtime_image or _runtime_tag()).tag(service_image)  # as before
    orphan = f"o16n-service:{settings.instance}-0123456789abcdef"
    engine.images.get(service_image).tag(orphan)  # unlabelled: not provably ours
    labelled_orphan = f"o16n-snapshot:{settings.instance}-{'ab' * 16}"
    _derive(engine, service_image, labelled_orphan, settings.instance)

    client, headers = await _start(aiohttp_client, settings)
    names = {t for i in engine.images.list() for t in i.tags}
    assert service_image in names and orphan in names and labelled_orphan not in names
    assert (await consume(client, headers, "Old", "1", {"x": 21}))["outputParameters"] == {"y": 42}
    await client.close()
    engine.images.remove(orphan)


def _runtime_tag() -> str:
    from controller.runtime.docker.image import default_tag

    return default_tag()


def _derive(engine: Any, source: str, target: str, instance: str) -> None:
    import io

    dockerfile = f'FROM {source}\nLABEL o16n.instance="{instance}"\n'.encode()
    repository, _, tag = target.rpartition(":")
    engine.images.build(fileobj=io.BytesIO(dockerfile), tag=target, rm=True)
    assert engine.images.get(f"{repository}:{tag}")


async def test_the_periodic_reap_spares_images_being_made(
    aiohttp_client: Any, data_dir: Path
) -> None:
    """The periodic reap takes only images older than a while: one being published right
    now is not recorded yet either. (At start nothing is being made: it takes them all.)"""
    from controller.app import sweep_environments
    from controller.runtime.sandboxes import SANDBOXES
    from controller.services.registry import SERVICES
    from controller.snapshots.manager import SNAPSHOTS

    settings = make_settings(data_dir, warm_pool_size=0, service_warm_pool_size=0)
    client, _ = await _start(aiohttp_client, settings)
    engine = docker.from_env()
    unrecorded = f"o16n-service:{settings.instance}-{'cd' * 8}"
    _derive(engine, settings.runtime_image or _runtime_tag(), unrecorded, settings.instance)
    parts = (client.app[SANDBOXES], client.app[SNAPSHOTS], client.app[SERVICES])
    await sweep_environments(*parts, min_age=900)
    assert unrecorded in _images(settings.instance)
    await sweep_environments(*parts)
    assert unrecorded not in _images(settings.instance)
    await client.close()


async def test_an_image_derived_again_counts_as_new_for_the_periodic_reap(
    aiohttp_client: Any, data_dir: Path
) -> None:
    """A service published now on the runtime image gets its own image whose age is now,
    even when an identical one was built before (the build cache would hand back that one,
    with its old creation time, and the periodic reap would take the new service's image
    before its row is written)."""
    from controller.runtime.sandboxes import SANDBOXES

    settings = make_settings(data_dir, warm_pool_size=0, service_warm_pool_size=0)
    client, _ = await _start(aiohttp_client, settings)
    environments = client.app[SANDBOXES].environments
    try:
        await environments.keep(environments.base, "service")
        await asyncio.sleep(3)
        now = await environments.keep(environments.base, "service")
        await environments.sweep(set(), min_age=2)
        assert _images(settings.instance) == {now}
    finally:
        await client.close()
        for name in _images(settings.instance):
            docker.from_env().images.remove(name)
