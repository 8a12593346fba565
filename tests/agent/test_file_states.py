"""What the agent tracks of its working directory (changed files, a service's restore):
regular files by their path relative to it, links not followed, a bounded number."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from o16n_agent.execution import file_states


def test_files_are_named_by_their_path_from_the_root(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "top.txt").write_text("1")
    (tmp_path / "a" / "mid.txt").write_text("22")
    (tmp_path / "a" / "b" / "deep.bin").write_bytes(b"333")
    (tmp_path / "link").symlink_to(tmp_path / "top.txt")
    (tmp_path / "dirlink").symlink_to(tmp_path / "a")
    os.mkfifo(tmp_path / "fifo")

    states = file_states(str(tmp_path) + "/")

    assert sorted(states) == ["a/b/deep.bin", "a/mid.txt", "top.txt"]
    info = (tmp_path / "a" / "b" / "deep.bin").stat()
    assert states["a/b/deep.bin"] == (info.st_mtime_ns, 3)


def test_a_relative_root_gives_the_same_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    absolute = file_states(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert file_states(".") == absolute == file_states("d/..")
    assert list(absolute) == ["d/f"]


def test_at_most_limit_files_are_tracked(tmp_path: Path) -> None:
    for i in range(10):
        (tmp_path / f"f{i}").write_text("x")
    assert len(file_states(str(tmp_path), limit=4)) == 4
