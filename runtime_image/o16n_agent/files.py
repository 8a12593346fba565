"""Files of the working directory, addressed by plain names (no paths)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable

from o16n_agent.errors import OpError
from o16n_agent.protocol import CHUNK, FileBlob


def check_name(name: object) -> str:
    """A file name with no path in it; anything else is refused."""
    if (
        not isinstance(name, str)
        or not name
        or len(name) > 255
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\0" in name
    ):
        raise OpError(f"invalid file name {name!r}", "invalid")
    return name


def list_files(workdir: str) -> list[str]:
    names = []
    for entry in os.scandir(workdir):
        if entry.is_file(follow_symlinks=False):
            names.append(entry.name)
    return sorted(names)


def _open_regular(workdir: str, name: str) -> tuple[int, int]:
    """An open descriptor of regular file ``name`` and its size. A symlink is not
    followed, and a directory or a FIFO (whose open or read would fail or block) is
    refused."""
    path = os.path.join(workdir, check_name(name))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise OpError(f"no file named {name!r}", "not_found") from None
    except OSError as exc:
        raise OpError(f"cannot read {name!r}: {exc.strerror}", "invalid") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise OpError(f"{name!r} is not a regular file", "invalid")
    return fd, info.st_size


def read_file(workdir: str, name: str) -> bytes:
    """The content of regular file ``name``, in memory (small files only)."""
    fd, _ = _open_regular(workdir, name)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def open_file(workdir: str, name: str) -> FileBlob:
    """Regular file ``name`` as a reply blob: sent from the file (``sendfile``), never
    read into memory: the working directory is a tmpfs, so a copy would double what
    the file costs of the container's memory."""
    fd, size = _open_regular(workdir, name)
    return FileBlob(fd, size)


def write_file(workdir: str, name: str, data: bytes | Callable[[int], bytes]) -> None:
    """Create or overwrite ``name``; a symlink in its place is replaced, never followed.
    ``data`` is the content, or a ``read(n)`` that returns it piece by piece (``b""`` at
    the end): an upload is written as it arrives. A file that could not be written
    whole is removed."""
    path = os.path.join(workdir, check_name(name))
    if os.path.isdir(path) and not os.path.islink(path):
        raise OpError(f"{name!r} is a directory", "invalid")
    if os.path.islink(path):
        os.unlink(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, bytes):
                f.write(data)
            else:
                while chunk := data(CHUNK):
                    f.write(chunk)
    except OSError as exc:
        code = "too_large" if exc.errno in (errno.EFBIG, errno.ENOSPC, errno.EDQUOT) else "invalid"
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise OpError(f"cannot write {name!r}: {exc.strerror}", code) from None


def delete_file(workdir: str, name: str) -> None:
    path = os.path.join(workdir, check_name(name))
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            raise OpError(f"{name!r} is a directory", "invalid")
        os.unlink(path)
    except FileNotFoundError:
        raise OpError(f"no file named {name!r}", "not_found") from None
