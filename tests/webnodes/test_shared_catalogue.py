"""Two controllers on one database: what one publishes, changes or deletes, the other
serves within a second or two, and a token revoked on one is refused by the other."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from controller.app import create_app
from controller.services.registry import SERVICES
from controller.settings import SETTINGS
from tests.conftest import bearer, login, make_settings
from tests.services.conftest import consume, publish

Client = TestClient[Any, Any]

DEFINITIONS = {
    "inputParameterDefinitions": [{"name": "x", "type": "integer"}],
    "outputParameterDefinitions": [{"name": "y", "type": "integer"}],
}


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "not within the time"
        await asyncio.sleep(0.1)


async def two(aiohttp_client: Any, data_dir: Path) -> tuple[Client, Client]:
    """Two controllers of one group: one database, one shared directory, their own
    containers (instances)."""
    first = await aiohttp_client(create_app(make_settings(data_dir, service_pool_initial=0)))
    second = await aiohttp_client(create_app(make_settings(data_dir, service_pool_initial=0)))
    return first, second


async def test_a_version_published_on_one_controller_is_served_by_the_other(
    aiohttp_client: Any, data_dir: Path
) -> None:
    a, b = await two(aiohttp_client, data_dir)
    headers = bearer((await login(a))["access_token"])
    await publish(a, headers, "twice", "v1", code="y = x * 2", **DEFINITIONS)

    # at once, through the other controller: its catalogue reads the store on a miss
    resp = await b.get("/services/twice/v1", headers=headers)
    assert resp.status == 200, await resp.text()
    resp = await b.get("/services", headers=headers)
    assert [s["name"] for s in await resp.json()] == ["twice"]
    resp = await b.get("/services/twice", headers=headers)
    assert [s["version"] for s in await resp.json()] == ["v1"]
    assert (await consume(b, headers, "twice", "v1", {"x": 4}))["outputParameters"] == {"y": 8}

    # a change of code reaches the other controller's containers too
    resp = await a.patch("/services/twice/v1", json={"code": "y = x * 3"}, headers=headers)
    assert resp.status == 200, await resp.text()

    async def changed() -> bool:
        body = await consume(b, headers, "twice", "v1", {"x": 4})
        return bool(body["outputParameters"] == {"y": 12})

    await eventually(changed)

    # the same version published on the other before it heard of it: 409, never a 500
    resp = await b.post(
        "/services/twice/v1", json={"code": "y = 0", "runtimeType": "Python"}, headers=headers
    )
    assert resp.status == 409, await resp.text()

    resp = await a.delete("/services/twice/v1", headers=headers)
    assert resp.status == 200, await resp.text()
    resp = await b.get("/services", headers=headers)  # a listing reads the store's count
    assert await resp.json() == []

    async def gone() -> bool:
        resp = await b.post("/api/twice/v1", json={"x": 4}, headers=headers)
        return resp.status == 404

    await eventually(gone)


async def test_a_version_another_controller_just_published_is_a_409_not_a_500(
    aiohttp_client: Any, data_dir: Path
) -> None:
    a, b = await two(aiohttp_client, data_dir)
    headers = bearer((await login(a))["access_token"])
    body = {"code": "y = 1", "runtimeType": "Python"}
    answers = await asyncio.gather(
        a.post("/services/race/v1", json=body, headers=headers),
        b.post("/services/race/v1", json=body, headers=headers),
    )
    assert sorted(r.status for r in answers) == [201, 409], [r.status for r in answers]


async def test_a_user_disabled_on_one_controller_is_refused_by_the_other_within_a_second(
    aiohttp_client: Any, data_dir: Path
) -> None:
    a, b = await two(aiohttp_client, data_dir)
    admin = bearer((await login(a))["access_token"])
    resp = await a.post(
        "/admin/users",
        json={"name": "carol", "password": "password-123", "role": "Contributor"},
        headers=admin,
    )
    assert resp.status == 201, await resp.text()

    async def known() -> bool:  # the other controller learns of the new user as well
        resp = await b.post("/login", json={"username": "carol", "password": "password-123"})
        return resp.status == 200

    await eventually(known)
    carol = bearer((await login(b, "carol", "password-123"))["access_token"])
    assert (await b.get("/services", headers=carol)).status == 200

    resp = await a.patch("/admin/users/carol", json={"disabled": True}, headers=admin)
    assert resp.status == 200, await resp.text()
    started = asyncio.get_running_loop().time()

    async def refused() -> bool:
        return (await b.get("/services", headers=carol)).status == 401

    await eventually(refused, within=3.0)
    assert asyncio.get_running_loop().time() - started < 2.5


async def test_a_version_just_published_elsewhere_can_be_changed_here_at_once(
    aiohttp_client: Any, data_dir: Path
) -> None:
    a, b = await two(aiohttp_client, data_dir)
    headers = bearer((await login(a))["access_token"])
    await publish(a, headers, "fresh", "v1", code="y = 1")
    resp = await b.patch("/services/fresh/v1", json={"description": "d"}, headers=headers)
    assert resp.status == 200, await resp.text()
    resp = await b.delete("/services/fresh/v1", headers=headers)
    assert resp.status == 200, await resp.text()


async def test_a_token_of_an_unknown_family_costs_one_read_until_the_next_reload(
    data_dir: Path,
) -> None:
    """A deleted account's access tokens stay signed for an hour: each request with one
    must not cost a database read."""
    from controller.auth.directory import Directory
    from controller.store.db import open_database

    db = await open_database(make_settings(data_dir))
    try:
        directory = Directory(db, 3600)
        await directory.reload()
        reads = 0
        real = directory.tokens_repo.family

        async def counted(family_id: str) -> Any:
            nonlocal reads
            reads += 1
            return await real(family_id)

        directory.tokens_repo.family = counted  # type: ignore[method-assign]
        for _ in range(5):
            assert await directory.look_up(1, "gone", 1) is None
        assert reads == 1
        await directory.reload()
        assert await directory.look_up(1, "gone", 1) is None
        assert reads == 2
    finally:
        await db.close()


async def stale(client: Client) -> None:
    """``client``'s catalogue stops reading what the others change, as in the second
    before its watch looks again: its copy of each version goes stale."""
    repo = client.app[SERVICES]._repo
    seen = await repo.changes()

    async def frozen() -> int:
        return seen

    repo.changes = frozen  # type: ignore[method-assign]
    await asyncio.sleep(1.5)  # a look the watch had due (one interval) is over


async def test_a_change_made_from_a_stale_copy_is_a_409_and_undoes_nothing(
    aiohttp_client: Any, data_dir: Path
) -> None:
    """A patch writes the whole row: one from a copy another controller's change has
    passed would put the old code back."""
    a, b = await two(aiohttp_client, data_dir)
    headers = bearer((await login(a))["access_token"])
    await publish(a, headers, "twice", "v1", code="y = x * 2", **DEFINITIONS)
    assert (await b.get("/services/twice/v1", headers=headers)).status == 200
    await stale(b)
    resp = await a.patch("/services/twice/v1", json={"code": "y = x * 3"}, headers=headers)
    assert resp.status == 200, await resp.text()

    resp = await b.patch("/services/twice/v1", json={"description": "d"}, headers=headers)
    assert resp.status == 409, await resp.text()
    assert "another controller" in (await resp.json())["message"]
    for client in (a, b):  # b has read the version again: the new code, on both
        body = await consume(client, headers, "twice", "v1", {"x": 4})
        assert body["outputParameters"] == {"y": 12}
    resp = await b.delete("/services/twice/v1", headers=headers)
    assert resp.status == 200, await resp.text()

    async def gone() -> bool:
        return (await a.get("/services/twice/v1", headers=headers)).status == 404

    await eventually(gone)


async def test_a_model_replaced_elsewhere_is_not_deleted_from_a_stale_copy(
    aiohttp_client: Any, data_dir: Path
) -> None:
    """The stale copy names the model file the replacement removed: deleting the version
    from it would leave the new model behind, named by no row."""
    from tests.realtime.conftest import FEATURES, frame_body, iris, leftovers, onnx_logistic
    from tests.realtime.conftest import publish_model as publish_realtime

    a, b = await two(aiohttp_client, data_dir)
    headers = bearer((await login(a))["access_token"])
    await publish_realtime(a, headers, "iris", "v1", onnx_logistic())
    assert (await b.get("/services/iris/v1", headers=headers)).status == 200
    await stale(b)
    await publish_realtime(a, headers, "iris", "v1", onnx_logistic(), patch=True)
    (kept,) = leftovers(a.app[SETTINGS])["models"]

    resp = await b.delete("/services/iris/v1", headers=headers)
    assert resp.status == 409, await resp.text()
    assert leftovers(a.app[SETTINGS])["models"] == [kept]
    frame, _ = iris()
    body = frame_body(frame[:3], [f"X_{i}" for i in range(len(FEATURES))])
    resp = await b.post("/api/iris/v1", json=body, headers=headers)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["success"], await resp.text()

    resp = await b.delete("/services/iris/v1", headers=headers)
    assert resp.status == 200, await resp.text()
    assert leftovers(a.app[SETTINGS])["models"] == []


async def test_a_version_handed_to_another_user_is_not_handed_back_from_a_stale_copy(
    aiohttp_client: Any, data_dir: Path
) -> None:
    a, b = await two(aiohttp_client, data_dir)
    admin = bearer((await login(a))["access_token"])
    for name in ("alice", "bob"):
        resp = await a.post(
            "/admin/users",
            json={"name": name, "password": "password-123", "role": "Contributor"},
            headers=admin,
        )
        assert resp.status == 201, await resp.text()
    alice = bearer((await login(a, "alice", "password-123"))["access_token"])
    await publish(a, alice, "hers", "v1", code="y = x", **DEFINITIONS)
    assert (await b.get("/services/hers/v1", headers=admin)).status == 200
    await stale(b)

    async def published_by(client: Client) -> str:
        resp = await client.get("/services/hers/v1", headers=admin)
        return str((await resp.json())[0]["versionPublishedBy"])

    resp = await a.post("/admin/users/alice/transfer", json={"to": "bob"}, headers=admin)
    assert resp.status == 200, await resp.text()
    assert await published_by(a) == "bob"  # at once, on the controller it was done on

    resp = await b.patch("/services/hers/v1", json={"description": "d"}, headers=admin)
    assert resp.status == 409, await resp.text()
    resp = await b.patch("/services/hers/v1", json={"description": "d"}, headers=admin)
    assert resp.status == 200, await resp.text()
    assert await published_by(a) == await published_by(b) == "bob"


async def test_a_copy_of_a_deleted_version_changes_nothing_of_the_one_published_again(
    aiohttp_client: Any, data_dir: Path
) -> None:
    """The version deleted and published again under the same name and version is a new
    row: a copy of the first one must not match it."""
    a, b = await two(aiohttp_client, data_dir)
    headers = bearer((await login(a))["access_token"])
    await publish(a, headers, "again", "v1", code="y = x * 2", **DEFINITIONS)
    assert (await b.get("/services/again/v1", headers=headers)).status == 200
    await stale(b)
    assert (await a.delete("/services/again/v1", headers=headers)).status == 200
    await publish(a, headers, "again", "v1", code="y = x * 3", **DEFINITIONS)

    resp = await b.patch("/services/again/v1", json={"description": "d"}, headers=headers)
    assert resp.status == 409, await resp.text()
    for client in (a, b):
        body = await consume(client, headers, "again", "v1", {"x": 4})
        assert body["outputParameters"] == {"y": 12}

    # deleted elsewhere while this copy was stale: a 404, as it is
    assert (await a.delete("/services/again/v1", headers=headers)).status == 200
    resp = await b.delete("/services/again/v1", headers=headers)
    assert resp.status == 404, await resp.text()
