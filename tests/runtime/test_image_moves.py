"""An image archive from another compute node is loaded under the name asked for only, and
without the layers the target has; a broken one is refused, named."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from controller.errors import RuntimeFailure
from controller.runtime.docker.image_moves import _trim


def archive(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> None:
    with tarfile.open(path, "w") as out:
        for name, data in files.items():
            header = tarfile.TarInfo(name)
            header.size = len(data)
            out.addfile(header, io.BytesIO(data))
        for name, target in (links or {}).items():
            header = tarfile.TarInfo(name)
            header.type, header.linkname = tarfile.SYMTYPE, target
            out.addfile(header)


def saved(path: Path, tags: list[str], links: dict[str, str] | None = None) -> None:
    config = {"rootfs": {"type": "layers", "diff_ids": ["sha256:base", "sha256:own"]}}
    manifest = [{"Config": "c.json", "RepoTags": tags, "Layers": ["a/layer.tar", "b/layer.tar"]}]
    archive(
        path,
        {
            "a/layer.tar": b"A" * 100,
            "b/layer.tar": b"B" * 10,
            "c.json": json.dumps(config).encode(),
            "manifest.json": json.dumps(manifest).encode(),
            "repositories": json.dumps({"o16n-runtime": {"x": "a"}}).encode(),
        },
        links,
    )


def test_the_archive_names_what_was_asked_for_and_leaves_the_shared_layers(
    tmp_path: Path,
) -> None:
    saved(tmp_path / "in.tar", ["o16n-runtime:x", "o16n-service:other"])  # a node's lie
    _trim(tmp_path / "in.tar", tmp_path / "out.tar", ["sha256:base"], "o16n-snapshot:o-1")
    with tarfile.open(tmp_path / "out.tar") as out:
        names = out.getnames()
        handle = out.extractfile("manifest.json")
        assert handle is not None
        manifest = json.loads(handle.read())
    assert manifest[0]["RepoTags"] == ["o16n-snapshot:o-1"]
    assert "repositories" not in names and "a/layer.tar" not in names
    assert "b/layer.tar" in names


def test_a_link_to_a_shared_layer_keeps_it(tmp_path: Path) -> None:
    saved(tmp_path / "in.tar", ["x:y"], links={"d/layer.tar": "../a/layer.tar"})
    _trim(tmp_path / "in.tar", tmp_path / "out.tar", ["sha256:base"], "x:y")
    with tarfile.open(tmp_path / "out.tar") as out:
        assert "a/layer.tar" in out.getnames()


def test_an_archive_without_a_manifest_is_refused(tmp_path: Path) -> None:
    archive(tmp_path / "in.tar", {"a/layer.tar": b"A"})
    with pytest.raises(RuntimeFailure, match=r"manifest\.json"):
        _trim(tmp_path / "in.tar", tmp_path / "out.tar", [], "x:y")
