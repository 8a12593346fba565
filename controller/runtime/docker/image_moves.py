"""Moving an image from one compute node's engine to another's, by ``docker save``/``load``.

A snapshot or a service's environment is an image on the node where it was captured; a
container placed on another node needs it there. The archive ``docker save`` writes is
spooled to the controller's disk (never memory), then loaded into the target without the
layers the target already has: Docker's load skips a layer whose chain it holds without
reading its file, so a snapshot moves only what its session changed, and the runtime
image's layers, on every node already, never move again. Why not a registry: see
docs/compute-nodes.md.
"""

from __future__ import annotations

import asyncio
import errno
import io
import json
import logging
import posixpath
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from controller.errors import NotFoundError, RuntimeFailure, out_of_space
from controller.runtime.docker.gateway import DockerGateway

log = logging.getLogger(__name__)

CHUNK = 1 << 20
JSON_MAX = 4 * 1024 * 1024  # bytes of an archive's manifest or image config we read
#: What ``docker save`` writes that names tags beside the manifest: never passed on.
LEFT_OUT = frozenset({"repositories", "index.json", "oci-layout"})


async def copy_image(
    source: DockerGateway, target: DockerGateway, ref: str, spool: Path, base: str = ""
) -> int:
    """Copy image ``ref`` from ``source`` to ``target``; returns the bytes sent to the target.
    The layers ``target`` has as the bottom of ``base`` (the runtime image) are left out."""
    started = time.monotonic()
    known = await layers_or_none(target, base) if base else []
    folder = Path(await asyncio.to_thread(_spool_dir, spool))
    try:
        saved, trimmed = folder / "saved.tar", folder / "trimmed.tar"
        out = await asyncio.to_thread(saved.open, "wb")
        try:
            await source.save_image(ref, out.write)  # written on the gateway's thread
        finally:
            await asyncio.to_thread(out.close)
        try:
            size = await asyncio.to_thread(_trim, saved, trimmed, known, ref)
        except (tarfile.TarError, EOFError) as exc:  # a save cut short, or not an archive
            raise RuntimeFailure(f"the archive of {ref} could not be read: {exc}") from None
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise out_of_space() from None
            raise

        def chunks() -> Iterator[bytes]:
            with trimmed.open("rb") as archive:
                while block := archive.read(CHUNK):
                    yield block

        await target.load_image(chunks)
    finally:
        await asyncio.to_thread(shutil.rmtree, folder, True)
    log.info(
        "image moved between compute nodes",
        extra={"image": ref, "bytes": size, "seconds": round(time.monotonic() - started, 2)},
    )
    return size


def _spool_dir(spool: Path) -> str:
    spool.mkdir(mode=0o700, parents=True, exist_ok=True)
    return tempfile.mkdtemp(dir=spool, prefix="move-")


async def layers_or_none(gateway: DockerGateway, ref: str) -> list[str]:
    """``ref``'s layers on ``gateway``'s engine; none when it does not have it."""
    try:
        return await gateway.image_layers(ref)
    except NotFoundError:
        return []


def _trim(saved: Path, trimmed: Path, known: list[str], ref: str) -> int:
    """Write ``saved`` to ``trimmed`` without the layer files of the image's bottom layers
    that are the ``known`` ones; returns the size written. The archive comes from another
    node's engine and is not trusted to say what it is: its manifest is written anew to
    name ``ref`` alone (a node cannot retag the runtime image or another service's image on
    this one), and the legacy ``repositories`` file, which names tags too, is left out.
    Blocking."""
    with tarfile.open(saved, mode="r:") as archive:
        layers, diff_ids, manifest = _layers(archive)
        shared = 0
        while shared < min(len(known), len(diff_ids)) and known[shared] == diff_ids[shared]:
            shared += 1
        skipped = set(layers[:shared])
        members = archive.getmembers()
        for member in members:  # a kept link to a skipped layer keeps that layer
            if member.issym():
                skipped.discard(posixpath.normpath(posixpath.join(
                    posixpath.dirname(member.name), member.linkname
                )))  # fmt: skip
        manifest[0]["RepoTags"] = [ref]
        named = json.dumps(manifest).encode()
        with trimmed.open("wb") as out:
            with tarfile.open(fileobj=out, mode="w:") as result:
                for member in members:
                    if member.name in skipped or member.name in LEFT_OUT:
                        continue
                    if member.name == "manifest.json":
                        header = tarfile.TarInfo("manifest.json")
                        header.size, header.mode = len(named), 0o644
                        result.addfile(header, io.BytesIO(named))
                    elif member.isfile():
                        result.addfile(member, archive.extractfile(member))
                    elif member.isdir() or member.issym():  # docker save links shared layers
                        result.addfile(member)
            return out.tell()


def _layers(archive: tarfile.TarFile) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """The archive's layer files and their content digests, bottom first, and its
    manifest."""
    manifest = _json(archive, "manifest.json")
    if not isinstance(manifest, list) or len(manifest) != 1 or not isinstance(manifest[0], dict):
        raise RuntimeFailure("docker save wrote an archive of an unexpected shape")
    layers = manifest[0].get("Layers")
    config = _json(archive, str(manifest[0].get("Config", "")))
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(layers, list) or not isinstance(diff_ids, list):
        raise RuntimeFailure("docker save wrote an archive without its layers' digests")
    if len(layers) != len(diff_ids):
        raise RuntimeFailure("docker save wrote an archive whose layers do not match")
    return [str(name) for name in layers], [str(digest) for digest in diff_ids], manifest


def _json(archive: tarfile.TarFile, name: str) -> Any:
    try:
        member = archive.getmember(name)
    except KeyError:
        raise RuntimeFailure(f"docker save wrote an archive without {name}") from None
    if not member.isfile() or member.size > JSON_MAX:
        raise RuntimeFailure(f"docker save wrote an archive whose {name} is not a small file")
    handle: IO[bytes] | None = archive.extractfile(member)
    if handle is None:
        raise RuntimeFailure(f"docker save wrote an archive whose {name} cannot be read")
    try:
        return json.loads(handle.read())
    except ValueError:
        raise RuntimeFailure(f"docker save wrote an archive whose {name} is not JSON") from None
