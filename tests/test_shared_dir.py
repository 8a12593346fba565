"""``O16N_SHARED_DIR``: the files every controller of a group reads (workspace archives,
the generated signing key and admin password) live there, apart from each controller's
own data directory; an install that kept them in its data directory keeps them. On the
fake engine: no Docker."""

from __future__ import annotations

import asyncio
import io
import os
import stat
import threading
import zipfile
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from controller.app import create_app
from controller.auth import bootstrap
from controller.auth.bootstrap import jwt_secret, shared_secret
from controller.services.registry import SERVICES
from controller.settings import Settings, SettingsError
from controller.snapshots import archives
from controller.snapshots.manager import SNAPSHOTS
from controller.store.db import open_database
from tests.conftest import bearer, login, make_settings
from tests.services.conftest import consume, publish
from tests.sessions.conftest import execute, new_session


def files(folder: Path) -> list[str]:
    """The names in ``folder`` (none if it does not exist), sorted."""
    return sorted(os.listdir(folder)) if folder.is_dir() else []


async def snapshot_of(client: TestClient[Any, Any], headers: dict[str, str]) -> str:
    """A session with ``x = 20`` and a file, snapshotted; the snapshot's id."""
    session = await new_session(client, headers)
    result = await execute(client, headers, session, "x = 20\nopen('f.txt', 'w').write('kept')")
    assert result["success"], result
    resp = await client.post(f"/sessions/{session}/snapshot", json={}, headers=headers)
    assert resp.status == 201, await resp.text()
    snapshot_id: str = (await resp.json())["snapshotId"]
    return snapshot_id


async def publish_adder(client: TestClient[Any, Any], headers: dict[str, str], snap: str) -> None:
    await publish(
        client,
        headers,
        "Adder",
        "1",
        snapshotId=snap,
        code="y = x + a",
        inputParameterDefinitions=[{"name": "a", "type": "integer"}],
        outputParameterDefinitions=[{"name": "y", "type": "integer"}],
    )


async def downloaded(client: TestClient[Any, Any], headers: dict[str, str], snap: str) -> bytes:
    resp = await client.get(f"/snapshots/{snap}", headers=headers)
    assert resp.status == 200, await resp.text()
    with zipfile.ZipFile(io.BytesIO(await resp.read())) as zf:
        return zf.read("f.txt")


async def accepted(client: TestClient[Any, Any], token: str) -> bool:
    """Whether ``client``'s controller takes ``token`` within 3 s: its signature at once;
    its family (the database's) once that controller's directory reloaded, each second."""
    for _ in range(30):
        resp = await client.get("/services", headers=bearer(token))
        body = await resp.text()
        if resp.status == 200:
            return True
        assert "revoked or replaced" in body, body  # never a bad signature
        await asyncio.sleep(0.1)
    return False


def test_the_shared_dir_is_the_data_dir_unless_set_and_must_be_absolute() -> None:
    settings = Settings.from_env({"O16N_DATA_DIR": "/srv/o16n"})
    assert settings.shared_dir == Path("/srv/o16n") and not settings.shared_with_others
    settings = Settings.from_env({"O16N_DATA_DIR": "/srv/o16n", "O16N_SHARED_DIR": "/mnt/g"})
    assert settings.shared_dir == Path("/mnt/g") and settings.shared_with_others
    assert Settings.from_env({}).shared_dir == Path("data")
    with pytest.raises(SettingsError, match="O16N_SHARED_DIR"):
        Settings.from_env({"O16N_SHARED_DIR": "group"})


def test_controllers_starting_at_once_agree_on_one_signing_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each finds no key and offers one of its own (every look happens before any write);
    the first to link its file into place wins, and every one of them reads that one. No
    draft is left behind; the file is the owner's only."""
    path = tmp_path / "group" / "jwt-secret"
    count = 8
    looked = threading.Barrier(count, timeout=10)
    first_look = threading.local()
    read = bootstrap._read_secret

    def read_then_wait(where: Path) -> str | None:
        found = read(where)
        if not getattr(first_look, "done", False):
            first_look.done = True
            looked.wait()  # all found nothing before any of them writes
        return found

    monkeypatch.setattr(bootstrap, "_read_secret", read_then_wait)
    found: list[str] = []

    def start(n: int) -> None:
        found.append(shared_secret(path, f"key-of-controller-{n}-" + "k" * 32))

    threads = [threading.Thread(target=start, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == count and len(set(found)) == 1
    assert found[0].startswith("key-of-controller-")
    assert path.read_text() == found[0] + "\n"
    assert files(path.parent) == ["jwt-secret"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_key_made_in_the_data_dir_before_moves_to_the_shared_dir(tmp_path: Path) -> None:
    data, group = tmp_path / "data", tmp_path / "group"
    data.mkdir()
    (data / "jwt-secret").write_text("an-earlier-key-" + "e" * 40 + "\n")
    settings = Settings.from_env({}, data_dir=data, shared_dir=group)
    assert jwt_secret(settings) == "an-earlier-key-" + "e" * 40
    assert (group / "jwt-secret").read_text() == "an-earlier-key-" + "e" * 40 + "\n"
    assert not (data / "jwt-secret").exists()
    # another controller's earlier key does not replace the group's: it is left, unused
    other = tmp_path / "other"
    other.mkdir()
    (other / "jwt-secret").write_text("another-earlier-key-" + "o" * 40 + "\n")
    settings = Settings.from_env({}, data_dir=other, shared_dir=group)
    assert jwt_secret(settings) == "an-earlier-key-" + "e" * 40
    assert (other / "jwt-secret").exists()


def test_a_symbolic_link_in_place_of_the_key_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text("x" * 48)
    (tmp_path / "jwt-secret").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        shared_secret(tmp_path / "jwt-secret", "k" * 48)


def test_archives_move_across_file_systems_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where a rename cannot move a file (another file system: ``EXDEV``), it is copied to
    a name of its own, renamed into place, and only then removed; links are not moved."""
    data, group = tmp_path / "data", tmp_path / "group"
    (data / "snapshots").mkdir(parents=True)
    (data / "services").mkdir()
    (data / "snapshots" / "a.tar.gz").write_bytes(b"a" * 3_000_000)
    (data / "services" / "k.tar.gz").write_bytes(b"k")
    (data / "snapshots" / "link.tar.gz").symlink_to(tmp_path / "outside")
    rename = Path.rename

    def across(self: Path, target: Any) -> Any:
        if str(group) in str(target):
            raise OSError(18, "Invalid cross-device link")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", across)
    assert archives.move_earlier(data, group) == 2
    assert (group / "snapshots" / "a.tar.gz").read_bytes() == b"a" * 3_000_000
    assert (group / "services" / "k.tar.gz").read_bytes() == b"k"
    assert files(group / "snapshots") == ["a.tar.gz"] and files(data / "services") == []
    assert files(data / "snapshots") == ["link.tar.gz"]  # not ours to move: left alone
    assert stat.S_IMODE((group / "snapshots" / "a.tar.gz").stat().st_mode) == 0o600


async def test_snapshots_and_services_live_in_the_shared_dir(
    aiohttp_client: Any, data_dir: Path
) -> None:
    group = data_dir / "group"
    settings = make_settings(data_dir, engine="fake", shared_dir=group)
    client = await aiohttp_client(create_app(settings))
    headers = bearer((await login(client))["access_token"])
    assert stat.S_IMODE(group.stat().st_mode) == 0o700
    assert files(group) == ["jwt-secret"] and not (data_dir / "jwt-secret").exists()

    snap = await snapshot_of(client, headers)
    assert files(group / "snapshots") == [f"{snap}.tar.gz"]
    assert await downloaded(client, headers, snap) == b"kept"
    resp = await client.post("/sessions", json={"snapshotId": snap}, headers=headers)
    assert resp.status == 201, await resp.text()
    restored = (await resp.json())["sessionId"]
    result = await execute(client, headers, restored, "print(x + 1, open('f.txt').read())")
    assert result["consoleOutput"] == "21 kept\n"

    await publish_adder(client, headers, snap)
    assert len(files(group / "services")) == 1
    assert (await consume(client, headers, "Adder", "1", {"a": 2}))["outputParameters"] == {"y": 22}
    assert files(data_dir / "snapshots") == [] and files(data_dir / "services") == []

    # /status and /admin/node report the shared directory's disk too
    status = await (await client.get("/status", headers=headers)).json()
    disk = status["components"]["disk"]
    assert disk["details"]["path"] == str(data_dir.resolve())
    assert disk["components"]["shared"]["details"]["path"] == str(group.resolve())
    assert disk["components"]["shared"]["details"]["freeBytes"] > 0
    node = await (await client.get("/admin/node", headers=headers)).json()
    assert node["disk"]["sharedDir"]["path"] == str(group.resolve())
    assert node["disk"]["sharedDir"]["usedBytes"] > 0

    # deleting the snapshot leaves the service its copy; deleting the service removes that
    resp = await client.delete(f"/snapshots/{snap}", headers=headers)
    assert resp.status == 200, await resp.text()
    assert files(group / "snapshots") == []
    resp = await client.delete("/services/Adder/1", headers=headers)
    assert resp.status == 200, await resp.text()
    assert files(group / "services") == []


async def test_the_shared_disk_is_not_reported_when_it_is_the_data_dir(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    status = await (await client.get("/status", headers=admin_headers)).json()
    assert status["components"]["disk"]["components"] == {}
    node = await (await client.get("/admin/node", headers=admin_headers)).json()
    assert "sharedDir" not in node["disk"]


async def test_a_start_sweeps_no_fresh_file_of_another_controller_in_a_shared_dir(
    aiohttp_client: Any, data_dir: Path
) -> None:
    """At start, a file no row names is one a crash left only when no one else writes
    there; in a shared directory it may be another controller's snapshot or publish in
    flight, so only old ones go."""
    group = data_dir / "group"
    (group / "snapshots").mkdir(parents=True)
    (group / "services").mkdir()
    fresh = [group / "snapshots" / "s.tar.gz.tmp", group / "services" / "k.tar.gz"]
    for path in fresh:
        path.write_bytes(b"x")
    settings = make_settings(data_dir, engine="fake", shared_dir=group)
    client = await aiohttp_client(create_app(settings))
    assert [p.exists() for p in fresh] == [True, True]
    await client.close()
    # alone in its data directory, a controller sweeps them at start whatever their age
    alone = data_dir / "alone"
    (alone / "snapshots").mkdir(parents=True)
    (alone / "snapshots" / "s.tar.gz.tmp").write_bytes(b"x")
    await aiohttp_client(create_app(make_settings(alone, engine="fake")))
    assert files(alone / "snapshots") == []


async def test_an_install_that_kept_its_archives_in_the_data_dir_keeps_them(
    aiohttp_client: Any, data_dir: Path
) -> None:
    """The rows name archives relative to the shared directory: a start with one set
    moves what the data directory held there, and the signing key too, so snapshots,
    services and tokens made before all still work."""
    client = await aiohttp_client(create_app(make_settings(data_dir, engine="fake")))
    token = (await login(client))["access_token"]
    headers = bearer(token)
    snap = await snapshot_of(client, headers)
    await publish_adder(client, headers, snap)
    assert files(data_dir / "snapshots") == [f"{snap}.tar.gz"]
    await client.close()

    group = data_dir / "group"
    settings = make_settings(data_dir, engine="fake", shared_dir=group)
    again = await aiohttp_client(create_app(settings))
    assert files(group / "snapshots") == [f"{snap}.tar.gz"]
    assert len(files(group / "services")) == 1
    assert not (data_dir / "snapshots").exists() and not (data_dir / "services").exists()
    assert (await consume(again, headers, "Adder", "1", {"a": 3}))["outputParameters"] == {"y": 23}
    assert await downloaded(again, headers, snap) == b"kept"


async def test_two_controllers_of_a_group_accept_each_others_tokens(
    aiohttp_client: Any, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two controllers, their own data directories, one database and one shared
    directory, starting at once on a new database: one creates ``admin`` and writes its
    password beside the signing key they both use; a token from either works on both, and
    a sweep on one keeps what the other published."""
    database = data_dir / "group.sqlite3"
    monkeypatch.setattr(Settings, "db_path", property(lambda self: database))
    group = data_dir / "group"
    one = make_settings(data_dir / "one", engine="fake", shared_dir=group, admin_password=None)
    # on a database server, the second uses the first one's database
    same = {"database_url": one.database_url} if one.database_url is not None else {}
    two = make_settings(
        data_dir / "two", engine="fake", shared_dir=group, admin_password=None, **same
    )
    await (await open_database(one)).close()  # migrated: the race here is the admin's
    first, second = await asyncio.gather(
        aiohttp_client(create_app(one)), aiohttp_client(create_app(two))
    )
    assert files(group) == ["admin-password", "jwt-secret"]
    password = (group / "admin-password").read_text().strip()
    for a, b in ((first, second), (second, first)):
        token = (await login(a, password=password))["access_token"]
        assert await accepted(b, token)

    headers = bearer((await login(first, password=password))["access_token"])
    snap = await snapshot_of(first, headers)
    await publish_adder(first, headers, snap)
    [published] = files(group / "services")
    # every file old enough to be swept, were it unnamed
    monkeypatch.setattr("controller.services.environments.SWEEP_AGE", -60.0)
    monkeypatch.setattr("controller.snapshots.manager.SWEEP_AGE", -60.0)
    assert await second.app[SERVICES].sweep() == 0
    assert await second.app[SNAPSHOTS].sweep() == 0
    assert files(group / "services") == [published]


async def test_a_shared_disk_that_is_gone_fails_the_disk_but_not_its_own_check(
    tmp_path: Path,
) -> None:
    """The worse of the two is the disk's status; each keeps its own details."""
    from controller.health import HealthProbe
    from tests.test_health import _about, _engine

    probe = HealthProbe(_engine(_about, _about), tmp_path, 0, 0, shared_dir=tmp_path / "gone")
    low = HealthProbe(_engine(_about, _about), tmp_path, 0, 1 << 62, shared_dir=tmp_path)
    try:
        disk = (await probe.check())["disk"]
        warned = (await low.check())["disk"]
    finally:
        await probe.close()
        await low.close()
    assert disk["statusCode"] == "fail"
    assert disk["details"]["path"] == str(tmp_path.resolve())
    shared = disk["components"]["shared"]
    assert shared["statusCode"] == "fail" and shared["details"]["path"] == str(tmp_path / "gone")
    assert "No such file" in shared["details"]["error"]
    assert warned["statusCode"] == "warn" and warned["components"]["shared"]["statusCode"] == "warn"
