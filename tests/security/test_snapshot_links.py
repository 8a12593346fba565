"""Workspace links survive a snapshot (issue 8, item 10); extraction still never writes
through a link, outside the working directory, or a device file.

The hostile-tarball cases run the agent's extraction in-process; the round trips run a
real virtualenv in real sessions and a published service."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from o16n_agent import workspace
from o16n_agent.errors import OpError

from tests.services.conftest import consume, publish
from tests.sessions.conftest import execute, new_session

pytestmark = pytest.mark.docker


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buffer.getvalue()


def _file(name: str, data: bytes = b"owned") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, b""


def _special(name: str, kind: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, b""


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """A working directory and, beside it, a directory user code must never reach."""
    work, outside = tmp_path / "work", tmp_path / "outside"
    work.mkdir()
    outside.mkdir()
    (outside / "keep").write_text("keep")
    return work, outside


def _refused(work: Path, data: bytes) -> str:
    with pytest.raises(OpError) as info:
        workspace.restore({}, str(work), data)
    assert info.value.code == "invalid"
    return str(info.value)


def _untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["keep"]
    assert (outside / "keep").read_text() == "keep"


@pytest.mark.parametrize("target", ["absolute", "relative"])
def test_a_file_member_is_never_written_through_an_earlier_link(
    dirs: tuple[Path, Path], target: str
) -> None:
    work, outside = dirs
    link = str(outside) if target == "absolute" else "../outside"
    message = _refused(work, _tar(_link("escape", link), _file("escape/planted")))
    assert "escape/planted" in message and "not a directory" in message
    _untouched(outside)


def test_a_link_over_a_link_and_then_a_file_is_refused(dirs: tuple[Path, Path]) -> None:
    work, outside = dirs
    data = _tar(_link("a", "b"), _link("b", str(outside)), _file("a/planted"), _file("b/planted"))
    _refused(work, data)
    _untouched(outside)


def test_a_link_left_in_the_workspace_is_not_followed_either(dirs: tuple[Path, Path]) -> None:
    """A link user code made before a snapshot is loaded is no way out."""
    work, outside = dirs
    (work / "data").symlink_to(outside)
    _refused(work, _tar(_file("data/planted")))
    _untouched(outside)
    # a directory member replaces the link: its files then land inside the workspace
    info = tarfile.TarInfo("data")
    info.type = tarfile.DIRTYPE
    workspace.restore({}, str(work), _tar((info, b""), _file("data/planted")))
    assert not (work / "data").is_symlink() and (work / "data" / "planted").read_bytes()
    _untouched(outside)


@pytest.mark.parametrize(
    "name", ["../planted", "../outside/planted", "sub/../../planted", "./../planted"]
)
def test_dot_dot_members_are_refused(dirs: tuple[Path, Path], name: str) -> None:
    work, outside = dirs
    assert "outside the workspace" in _refused(work, _tar(_file(name)))
    _untouched(outside)
    assert not (work.parent / "planted").exists()


@pytest.mark.parametrize("target", ["/etc/passwd", "../outside/keep", "sub/../../outside/keep"])
def test_hard_links_outside_are_refused(dirs: tuple[Path, Path], target: str) -> None:
    work, outside = dirs
    assert "links outside" in _refused(work, _tar(_link("hard", target, tarfile.LNKTYPE)))
    assert not (work / "hard").exists()
    assert os.stat(outside / "keep").st_nlink == 1


def test_a_hard_link_through_a_symlink_is_refused(dirs: tuple[Path, Path]) -> None:
    """``l -> /outside/keep`` then a hard link to ``l`` would link the outside file."""
    work, outside = dirs
    data = _tar(_link("l", str(outside / "keep")), _link("hard", "l", tarfile.LNKTYPE))
    assert "not a regular file" in _refused(work, data)
    assert os.stat(outside / "keep").st_nlink == 1
    data = _tar(_link("d", str(outside)), _link("hard", "d/keep", tarfile.LNKTYPE))
    assert "not a directory" in _refused(work, data)
    assert os.stat(outside / "keep").st_nlink == 1


def test_a_hard_link_to_an_earlier_file_is_kept(dirs: tuple[Path, Path]) -> None:
    work, _ = dirs
    workspace.restore({}, str(work), _tar(_file("a", b"x"), _link("b", "a", tarfile.LNKTYPE)))
    assert (work / "b").read_bytes() == b"x" and os.stat(work / "a").st_nlink == 2


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_device_files_are_refused(dirs: tuple[Path, Path], kind: bytes) -> None:
    work, _ = dirs
    assert "special file" in _refused(work, _tar(_special("dev", kind)))
    assert not (work / "dev").exists()


def _venv_by_hand(root: Path) -> None:
    """A virtualenv's shape: an absolute interpreter link, relative links, ``lib64``."""
    site = root / "venv" / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    (site / "shipped.py").write_text("VALUE = 42\n")
    (root / "venv" / "pyvenv.cfg").write_text(f"home = {Path(sys.executable).parent}\n")
    bin_dir = root / "venv" / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)  # absolute
    (bin_dir / "python3").symlink_to("python")  # relative
    (root / "venv" / "lib64").symlink_to("lib")
    (root / "data.csv").write_text("a,b\n")
    (root / "alias.csv").symlink_to("data.csv")
    os.mkfifo(root / "pipe")  # no workspace could restore a FIFO: left out of the snapshot


def test_links_round_trip_as_links(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    source.mkdir()
    target.mkdir()
    _venv_by_hand(source)
    data, _, _ = workspace.save({}, str(source))
    (target / "alias.csv").write_text("replaced by the snapshot's link")
    workspace.restore({}, str(target), data)
    venv = target / "venv"
    assert os.readlink(venv / "bin" / "python") == sys.executable
    assert os.readlink(venv / "bin" / "python3") == "python"
    assert os.readlink(venv / "lib64") == "lib"
    assert os.readlink(target / "alias.csv") == "data.csv"
    assert (target / "alias.csv").read_text() == "a,b\n"
    assert (venv / "lib64" / "python3.11" / "site-packages" / "shipped.py").exists()
    assert not (target / "pipe").exists()
    run = subprocess.run(
        [str(venv / "bin" / "python3"), "-c", "import sys; print(sys.prefix)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout.strip() == str(venv)


# --- real sessions and a real service ------------------------------------------------------

MAKE_VENV = (
    "import os, subprocess, sys\n"
    "subprocess.run([sys.executable, '-m', 'venv', '--without-pip', '/work/venv'], check=True)\n"
    "site = [p for p in os.listdir('/work/venv/lib')][0]\n"
    "open(f'/work/venv/lib/{site}/site-packages/shipped.py', 'w').write('VALUE = 42\\n')\n"
    "os.symlink('/usr/bin/env', '/work/env-link')\n"  # absolute, made by hand
    "os.makedirs('/work/venv/extra')\n"
    "os.symlink('../bin/python', '/work/venv/extra/py')\n"  # relative, made by hand
    "open('/work/data.csv', 'w').write('a,b\\n')\n"
    "os.symlink('data.csv', '/work/alias.csv')"
)
USE_VENV = (
    "import os, subprocess\n"
    "run = subprocess.run(['/work/venv/extra/py', '-c',\n"
    "    'import sys, shipped; print(sys.prefix, shipped.VALUE)'],\n"
    "    capture_output=True, text=True)\n"
    "prefix = run.stdout.strip() or run.stderr\n"
    "links = {p: os.readlink(p) for p in ['/work/venv/lib64', '/work/env-link',\n"
    "         '/work/alias.csv'] + [e.path for e in os.scandir('/work/venv/bin')]\n"
    "         if os.path.islink(p)}\n"
    "alias = open('/work/alias.csv').read()"
)


async def test_a_virtualenv_comes_back_usable_from_a_snapshot(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    source = await new_session(client, admin_headers)
    made = await execute(client, admin_headers, source, MAKE_VENV + "\n" + USE_VENV)
    assert made["success"], made["errorMessage"]
    outputs = ["prefix", "links", "alias"]
    original = await execute(client, admin_headers, source, USE_VENV, outputParameters=outputs)
    assert original["outputParameters"][0]["value"] == "/work/venv 42"
    links = original["outputParameters"][1]["value"]
    venv_targets = [t for p, t in links.items() if p.startswith("/work/venv/bin/")]
    assert any(t.startswith("/") for t in venv_targets), links  # a virtualenv's link is absolute
    assert links["/work/venv/lib64"] == "lib" and links["/work/env-link"] == "/usr/bin/env"

    resp = await client.post(f"/sessions/{source}/snapshot", json={}, headers=admin_headers)
    assert resp.status == 201, await resp.text()
    snapshot_id = (await resp.json())["snapshotId"]

    # a new session from the snapshot
    resp = await client.post(
        "/sessions",
        json={"runtimeType": "Python", "snapshotId": snapshot_id},
        headers=admin_headers,
    )
    assert resp.status == 201, await resp.text()
    started = (await resp.json())["sessionId"]
    result = await execute(client, admin_headers, started, USE_VENV, outputParameters=outputs)
    assert result["success"], result["errorMessage"]
    assert result["outputParameters"] == original["outputParameters"]

    # loaded into a running session
    loaded = await new_session(client, admin_headers)
    resp = await client.post(
        f"/sessions/{loaded}/loadsnapshot/{snapshot_id}", headers=admin_headers
    )
    assert resp.status == 200, await resp.text()
    result = await execute(client, admin_headers, loaded, USE_VENV, outputParameters=outputs)
    assert result["outputParameters"] == original["outputParameters"]

    # a service published from it
    await publish(
        client,
        admin_headers,
        "VenvLinks",
        "1",
        snapshotId=snapshot_id,
        code=USE_VENV,
        outputParameterDefinitions=[
            {"name": "prefix", "type": "character"},
            {"name": "links", "type": "data.frame"},
            {"name": "alias", "type": "character"},
        ],
    )
    served = await consume(client, admin_headers, "VenvLinks", "1", {})
    assert served["success"], served["errorMessage"]
    assert served["outputParameters"] == {
        o["name"]: o["value"] for o in original["outputParameters"]
    }
