"""The agent's session operations, run in-process on the host (no container needed)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import dill
import pytest
from o16n_agent import session, workspace
from o16n_agent.errors import OpError
from o16n_agent.session import SessionOps


@pytest.fixture
def ops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SessionOps:
    monkeypatch.chdir(tmp_path)  # the agent runs in its working directory
    return SessionOps(str(tmp_path), lambda running: None)


def run(ops: SessionOps, code: str, **args: Any) -> dict[str, Any]:
    reply, _ = ops.execute({"code": code, **args}, None)
    return reply


def test_execute_keeps_state_and_shows_the_last_expression(ops: SessionOps) -> None:
    assert run(ops, "x = 2")["console"] == ""
    reply = run(ops, "print('p')\nx * 21")
    assert reply["success"] and reply["console"] == "p\n42\n"
    assert run(ops, "None")["console"] == ""


def test_keyboard_interrupt_is_a_cancellation(ops: SessionOps) -> None:
    reply = run(ops, "raise KeyboardInterrupt")
    assert reply["success"] is False and reply["cancelled"] is True


def test_an_output_that_cannot_be_json_is_a_result_naming_it(ops: SessionOps) -> None:
    code = "import pandas as pd\ndf = pd.DataFrame([[1, 2, 3]], columns=['a', 'b', 'a'])"
    reply = run(ops, code, outputs=["df"])
    assert reply["success"] is False
    assert "df" in reply["error"] and "duplicate column names ['a']" in reply["error"]
    reply = run(ops, "df.columns = ['a', 'b', 'c']", outputs=["df"])
    assert reply["success"] and reply["outputs"] == [
        {"name": "df", "value": {"a": [1], "b": [2], "c": [3]}}
    ]


def test_workspace_objects(ops: SessionOps) -> None:
    ops.workspace_set({"name": "m"}, dill.dumps({"a": 1}))
    run(ops, "import json\ndef helper():\n    return m['a'] + 1\nb = helper()")
    names, _ = ops.workspace_list({}, None)
    assert names["names"] == ["b", "helper", "m"]  # the module 'json' is not listed
    _, blob = ops.workspace_get({"name": "b"}, None)
    assert dill.loads(blob) == 2
    with pytest.raises(OpError) as info:
        ops.workspace_get({"name": "nope"}, None)
    assert info.value.code == "not_found"
    with pytest.raises(OpError) as info:
        ops.workspace_set({"name": "x"}, b"garbage")
    assert info.value.code == "invalid"
    with pytest.raises(OpError):
        ops.workspace_set({"name": "not valid"}, dill.dumps(1))


def test_snapshot_round_trip(
    tmp_path: Path, ops: SessionOps, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(
        ops,
        "import threading\nmodel = {'w': [1, 2]}\nlock = threading.Lock()\n"
        "def f(v):\n    return v * 2\nfrom pathlib import Path\nPath('data.txt').write_text('d')\n"
        "import os\nos.mkdir('sub')\nPath('sub/n.txt').write_text('n')",
    )
    reply, blob = ops.snapshot_save({}, None)
    assert "model" in reply["saved"] and "f" in reply["saved"]
    assert blob is not None
    target = tmp_path / "restored"
    target.mkdir()
    monkeypatch.chdir(target)
    fresh = SessionOps(str(target), lambda running: None)
    result, _ = fresh.snapshot_load({}, blob)
    assert "model" in result["objects"] and result["files"] == 2
    assert (target / "data.txt").read_text() == "d" and (
        target / "sub" / "n.txt"
    ).read_text() == "n"
    assert run(fresh, "f(model['w'][1])")["console"] == "4\n"


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buffer.getvalue()


def _member(
    name: str, kind: bytes = tarfile.REGTYPE, link: str = "", data: bytes = b"x"
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else b""


@pytest.mark.parametrize(
    "member",
    [
        _member("../escape.txt"),
        _member("hard", tarfile.LNKTYPE, "/etc/passwd"),
        _member("dev", tarfile.CHRTYPE),
    ],
)
def test_hostile_tarballs_are_refused(
    tmp_path: Path, member: tuple[tarfile.TarInfo, bytes]
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(OpError) as info:
        workspace.restore({}, str(work), _tar(member))
    assert info.value.code == "invalid"
    assert not (tmp_path / "escape.txt").exists()


def test_absolute_names_land_inside_the_workspace(tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    workspace.restore({}, str(work), _tar(_member("/etc/absolute.txt")))
    assert (work / "etc" / "absolute.txt").read_bytes() == b"x"


def test_extraction_drops_setuid_and_group_write(tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    setuid = tarfile.TarInfo("tool")
    setuid.mode = 0o4777
    setuid.size = 1
    workspace.restore({}, str(work), _tar((setuid, b"x")))
    assert (work / "tool").stat().st_mode & 0o7777 == 0o755


def numbered(ops: SessionOps, seq: int, code: str, recorded: int | None) -> dict[str, Any]:
    message: dict[str, Any] = {"code": code, "seq": seq}
    if recorded is not None:
        message["recorded"] = recorded
    reply, _ = ops.numbered_execute(message, None)
    return reply


def test_results_are_kept_until_the_controller_has_recorded_them(ops: SessionOps) -> None:
    """The controller writes its history behind its answers: a controller restarted
    before it wrote them collects every result it had not recorded yet."""
    for seq in (1, 2, 3):
        numbered(ops, seq, f"x = {seq}", recorded=0)
    assert ops.execution_state() == {"seq": 3, "running": False}
    for seq in (1, 2, 3):
        reply, _ = ops.execution_result({"seq": seq}, None)
        assert reply["code"] == f"x = {seq}" and reply["success"]
    numbered(ops, 4, "print('four')", recorded=2)  # 1 and 2 are written: dropped
    assert list(ops.kept) == [3, 4]
    with pytest.raises(OpError) as info:
        ops.execution_result({"seq": 2}, None)
    assert info.value.code == "not_found"
    numbered(ops, 3, "y = 1", recorded=2)  # numbered from 3 again: the old 3 and 4 are given up
    assert list(ops.kept) == [3] and ops.execution_result({"seq": 3}, None)[0]["code"] == "y = 1"
    numbered(ops, 4, "z = 1", recorded=None)  # a controller that does not say: the last only
    assert list(ops.kept) == [4]


def test_kept_results_are_bounded(ops: SessionOps, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session, "KEPT_CHARS", 100)
    numbered(ops, 1, "print('a' * 60)", recorded=0)
    numbered(ops, 2, "print('b' * 60)", recorded=0)  # over the bound: the oldest goes
    assert list(ops.kept) == [2]
    numbered(ops, 3, "print('c' * 200)", recorded=0)  # the newest stays, whatever its size
    assert list(ops.kept) == [3]
    monkeypatch.setattr(session, "KEPT_MAX", 2)
    monkeypatch.setattr(session, "KEPT_CHARS", 1 << 20)
    for seq in (4, 5, 6):
        numbered(ops, seq, "1", recorded=0)
    assert list(ops.kept) == [5, 6]


@pytest.mark.parametrize(
    ("code", "outputs"),
    [
        ("x = 'a' * 600", ["x"]),  # an output value: up to a reply's size, megabytes
        ("raise ValueError('e' * 600)", []),  # an error text: up to ERROR_MAX
        ("for c in 'fgh':\n    open(c * 200, 'w').close()", []),  # changed files' names
    ],
)
def test_the_bound_on_kept_results_counts_all_they_hold(
    ops: SessionOps, monkeypatch: pytest.MonkeyPatch, code: str, outputs: list[str]
) -> None:
    """A store that cannot write leaves the controller's ``recorded`` behind for good: what
    the agent keeps must stay within its bound whatever part of a result is large, not only
    when its console output is (an output value of megabytes, a thousand times over)."""
    monkeypatch.setattr(session, "KEPT_CHARS", 1000)
    for seq in (1, 2, 3):
        reply, _ = ops.numbered_execute(
            {"code": code, "outputs": outputs, "seq": seq, "recorded": 0}, None
        )
        assert reply["console"] == ""
    assert list(ops.kept) == [3]
