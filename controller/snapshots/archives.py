"""Workspace tarballs on disk: written atomically with their hash as they stream in from
the agent, hard-linked (or copied) for services, converted to zip for download. The
controller never unpickles what is inside; it only moves bytes and reads tar headers."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import shutil
import tarfile
import zipfile
from pathlib import Path
from typing import IO

#: bytes gathered before one write to disk (fewer trips to the executor)
WRITE_BATCH = 1 << 20


class ArchiveWriter:
    """A workspace tarball as it arrives from the agent (a ``BlobSink``): written to
    ``<path>.tmp`` in pieces off the loop and hashed on the way; ``commit`` moves it into
    place atomically (mode 0600) and makes the name durable, ``discard`` removes what was
    written (a full disk, say: no partial file stays behind)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tmp = path.with_suffix(path.suffix + ".tmp")
        self._file: IO[bytes] | None = None
        self._hash = hashlib.sha256()
        self._pending = bytearray()
        self.size = 0

    async def start(self, size: int) -> None:
        self._file = await asyncio.to_thread(self._open)

    def _open(self) -> IO[bytes]:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        return os.fdopen(fd, "wb")

    async def write(self, chunk: bytes) -> None:
        self._pending += chunk
        self.size += len(chunk)
        if len(self._pending) >= WRITE_BATCH:
            await self._flush()

    async def _flush(self) -> None:
        data, self._pending = bytes(self._pending), bytearray()
        if data:
            await asyncio.to_thread(self._write, data)

    def _write(self, data: bytes) -> None:
        assert self._file is not None
        self._file.write(data)
        self._hash.update(data)

    async def commit(self) -> str:
        """Move the tarball into place (an empty one if the agent sent none); its SHA-256."""
        if self._file is None:
            await self.start(0)
        await self._flush()
        await asyncio.to_thread(self._finish)
        return self._hash.hexdigest()

    def _finish(self) -> None:
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._tmp.replace(self.path)
        sync_directory(self.path.parent)

    async def discard(self) -> None:
        file, self._file = self._file, None
        await asyncio.to_thread(self._discard, file)

    def _discard(self, file: IO[bytes] | None) -> None:
        if file is not None:
            with contextlib.suppress(OSError):  # closing flushes: on a full disk, that fails
                file.close()
        remove(self._tmp)


def copy(source: Path, target: Path) -> None:
    """A service's own copy of a snapshot's tarball: a hard link where possible."""
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        try:
            shutil.copyfile(source, target)
            with open(target, "rb") as f:
                os.fsync(f.fileno())
        except BaseException:  # a full disk, say: no partial copy stays behind
            remove(target)
            raise
    sync_directory(target.parent)


#: the folders of the shared directory that hold archives (a row names ``<folder>/<file>``)
FOLDERS = ("snapshots", "services")


def move_earlier(data_dir: Path, shared_dir: Path) -> int:
    """Move the archives an earlier start kept under ``data_dir`` (before the shared
    directory was set) to the same names under ``shared_dir``, where the rows' relative
    names now point; returns how many. Each arrives whole before its old name goes, so a
    start killed half-way loses nothing and the next one finishes the move. Only regular
    files are moved (no link is followed); a folder left empty is removed."""
    moved = 0
    for folder in FOLDERS:
        source = data_dir / folder
        try:
            entries = [e for e in os.scandir(source) if e.is_file(follow_symlinks=False)]
        except FileNotFoundError:
            continue
        target = shared_dir / folder
        target.mkdir(mode=0o700, parents=True, exist_ok=True)
        for entry in entries:
            _move(Path(entry.path), target / entry.name)
            moved += 1
        with contextlib.suppress(OSError):  # not empty: something not ours is in it
            source.rmdir()
    return moved


def _move(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``, or copy it across file systems (to a name of its
    own first, then renamed into place) and remove it once the copy is durable."""
    try:
        source.rename(target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    else:
        sync_directory(target.parent)
        return
    part = target.with_name(target.name + ".moving")
    reader = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        writer = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(reader, "rb", closefd=False) as src, os.fdopen(writer, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
    except BaseException:
        remove(part)
        raise
    finally:
        os.close(reader)
    part.replace(target)
    sync_directory(target.parent)
    source.unlink()


def sync_directory(path: Path) -> None:
    """Make a new name in ``path`` durable: the database row naming it commits next."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def sweep(folder: Path, keep: set[str], age: float) -> int:
    """Remove the regular files of ``folder`` (named ``<folder name>/<file>`` relative to
    the data directory) that are not in ``keep`` and unchanged for ``age`` seconds (their
    status: a hard link's time is when it was made); returns how many."""
    import time

    removed = 0
    limit = time.time() - age
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            relative = f"{folder.name}/{entry.name}"
            if relative in keep or not entry.is_file(follow_symlinks=False):
                continue
            info = entry.stat(follow_symlinks=False)
            if max(info.st_mtime, info.st_ctime) <= limit:
                with contextlib.suppress(FileNotFoundError):
                    Path(entry.path).unlink()
                removed += 1
    return removed


def tar_to_zip(source: Path, out: IO[bytes]) -> None:
    """Re-pack a workspace tarball as a zip (the download format of ``GET /snapshots/{id}``).

    Regular files only; member names come from tar headers and are only written into the
    zip's directory, never used as paths here.
    """
    with (
        tarfile.open(source, mode="r:*") as tar,
        zipfile.ZipFile(out, mode="w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf,
    ):
        for member in tar:
            if not member.isfile():
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            info = zipfile.ZipInfo(member.name.lstrip("/"), date_time=_zip_time(member.mtime))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as target:
                shutil.copyfileobj(handle, target, 1 << 20)


def _zip_time(mtime: float) -> tuple[int, int, int, int, int, int]:
    import time

    t = time.gmtime(max(mtime, 315532800))  # zip cannot hold times before 1980
    return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)
