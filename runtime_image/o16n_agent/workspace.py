"""Workspace objects (dill) and workspace tarballs (snapshots).

A workspace tarball holds every file of the working directory plus one
``.o16n-workspace/<name>.dill`` member per global that dill could serialize. Names that
could not be serialized are reported, not fatal. Links are stored as links. Restoring
extracts files without ever following a link (see :func:`extract_data`; tarfile's ``data``
filter would refuse a virtualenv's absolute links, and Debian's 3.11.2 has no filters) and
loads the objects into the namespace, snapshot values winning.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import stat
import tarfile
import types
import zlib
from typing import Any

import dill

from o16n_agent import codec
from o16n_agent.errors import OpError

OBJECTS_DIR = ".o16n-workspace"
# Serialize functions with only the globals they use, not the whole namespace.
dill.settings["recurse"] = True


def visible_names(namespace: dict[str, Any]) -> list[str]:
    """Global names a user thinks of as their workspace: no modules, no dunder names."""
    return sorted(
        name
        for name, value in namespace.items()
        if not name.startswith("__") and not isinstance(value, types.ModuleType)
    )


def check_object_name(name: object) -> str:
    if not isinstance(name, str) or not name.isidentifier():
        raise OpError(f"invalid workspace object name {name!r}", "invalid")
    return name


def dump_object(namespace: dict[str, Any], name: str) -> bytes:
    if check_object_name(name) not in namespace:
        raise OpError(f"no workspace object named {name!r}", "not_found")
    try:
        data: bytes = dill.dumps(namespace[name])
    except BaseException as exc:  # whatever the object's __reduce__ raises, SystemExit too
        message = f"cannot serialize {name!r}: {codec.describe(exc)}"
        raise OpError(message, "invalid") from None
    return data


def load_object(namespace: dict[str, Any], name: str, data: bytes) -> None:
    check_object_name(name)
    try:
        namespace[name] = dill.loads(data)  # noqa: S301 - inside the sandbox, by design
    except BaseException as exc:  # a pickle runs code: it may raise SystemExit
        raise OpError(
            f"cannot deserialize the value for {name!r} (a dill pickle is expected): "
            f"{codec.describe(exc)}",
            "invalid",
        ) from None


def delete_object(namespace: dict[str, Any], name: str) -> None:
    if check_object_name(name) not in namespace or name.startswith("__"):
        raise OpError(f"no workspace object named {name!r}", "not_found")
    del namespace[name]


def save(namespace: dict[str, Any], workdir: str) -> tuple[bytes, list[str], dict[str, str]]:
    """Tarball of ``workdir`` and the serializable globals: ``(data, saved, skipped)``."""
    buffer = io.BytesIO()
    saved: list[str] = []
    skipped: dict[str, str] = {}
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for entry in sorted(os.listdir(workdir)):
            if entry != OBJECTS_DIR:
                tar.add(os.path.join(workdir, entry), arcname=entry, filter=_storable)
        for name in sorted(namespace):
            if name.startswith("__"):
                continue
            try:
                data = dill.dumps(namespace[name])
            except BaseException as exc:  # whatever __reduce__ raises, SystemExit too
                skipped[name] = codec.describe(exc, 300)
                continue
            info = tarfile.TarInfo(f"{OBJECTS_DIR}/{name}.dill")
            info.size = len(data)
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
            saved.append(name)
    return buffer.getvalue(), saved, skipped


def _storable(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """Files, directories and links (as links); a FIFO or a device file is left out: no
    workspace could restore it."""
    return info if info.isfile() or info.isdir() or info.issym() or info.islnk() else None


def restore(
    namespace: dict[str, Any], workdir: str, data: bytes, *, objects: bool = True
) -> tuple[list[str], int]:
    """Extract a workspace tarball into ``workdir`` and (unless ``objects`` is false) load
    its objects into ``namespace``: ``(names, files)``."""
    blobs: dict[str, bytes] = {}
    files = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            members = []
            for member in tar.getmembers():
                if member.name.startswith(OBJECTS_DIR + "/") and member.isfile():
                    name = member.name[len(OBJECTS_DIR) + 1 : -len(".dill")]
                    handle = tar.extractfile(member)
                    if objects and handle is not None and name.isidentifier():
                        blobs[name] = handle.read()
                else:
                    members.append(member)
                    files += member.isfile()
            extract_data(tar, members, workdir)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise OpError(f"the workspace tarball cannot be restored: {exc}", "invalid") from None
    loaded = []
    for name, blob in blobs.items():
        load_object(namespace, name, blob)
        loaded.append(name)
    return sorted(loaded), files


def extract_data(tar: tarfile.TarFile, members: list[tarfile.TarInfo], dest: str) -> None:
    """Extract ``members`` into ``dest``, never following a link.

    Symbolic links are recreated as links, whatever they point to (a virtualenv's
    ``bin/python -> /usr/local/bin/python3`` comes back as it was): nothing here opens
    a path through one. Every member is reached from ``dest`` one directory at a time with
    ``O_NOFOLLOW``, so a member under a link (``link -> /etc``, then ``link/passwd``) is
    refused instead of written through it. Refused too: names with ``..``, hard links to
    anything but an earlier regular file of the archive, device files and FIFOs. Modes
    lose setuid/setgid and group/other write, as with tarfile's ``data`` filter."""
    root = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    directories: list[tuple[list[str], int]] = []
    try:
        for member in members:
            parts = _member_parts(member.name, member)
            if parts:
                _extract(tar, member, root, parts, directories)
        for parts, mtime in reversed(directories):  # after their contents changed them
            with contextlib.suppress(OSError, tarfile.TarError, OverflowError, ValueError):
                fd = _walk(root, parts, None)
                try:
                    os.utime(fd, (mtime, mtime))
                finally:
                    os.close(fd)
    finally:
        os.close(root)


def _member_parts(name: str, member: tarfile.TarInfo) -> list[str]:
    """The path components of ``name`` below the destination (a leading ``/`` dropped)."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts or "\0" in name:
        raise tarfile.TarError(f"{member.name!r} would be extracted outside the workspace")
    return parts


def _walk(root: int, parts: list[str], member: tarfile.TarInfo | None) -> int:
    """An open descriptor of directory ``parts`` under ``root``, reached without following
    any link; with ``member``, missing directories are made on the way."""
    fd = os.dup(root)
    try:
        for index, part in enumerate(parts):
            try:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if member is None:
                    raise
                os.mkdir(part, 0o755, dir_fd=fd)
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                where = "/".join(parts[: index + 1])
                name = member.name if member is not None else where
                raise tarfile.TarError(
                    f"{name!r} would be written through {where!r}, which is not a directory"
                ) from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _extract(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    root: int,
    parts: list[str],
    directories: list[tuple[list[str], int]],
) -> None:
    leaf = parts[-1]
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        raise tarfile.TarError(f"{member.name!r} is a special file")
    if not (member.isdir() or member.isfile() or member.issym() or member.islnk()):
        raise tarfile.TarError(f"{member.name!r} is not a file, directory or link")
    parent = _walk(root, parts[:-1], member)
    try:
        if member.isdir():
            if not _is_dir(parent, leaf):
                _clear(parent, leaf)
                os.mkdir(leaf, 0o755, dir_fd=parent)
            directories.append((parts, int(member.mtime)))
        elif member.isfile():
            _clear(parent, leaf)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            fd = os.open(leaf, flags, 0o600, dir_fd=parent)
            with os.fdopen(fd, "wb") as out:
                source = tar.extractfile(member)
                if source is not None:
                    shutil.copyfileobj(source, out, 1 << 20)
                os.fchmod(out.fileno(), _file_mode(member.mode))
                out.flush()
                with contextlib.suppress(OSError, OverflowError, ValueError):  # a bad mtime
                    os.utime(out.fileno(), (member.mtime, member.mtime))
        elif member.issym():
            _clear(parent, leaf)
            os.symlink(member.linkname, leaf, dir_fd=parent)
            with contextlib.suppress(OSError, OverflowError, ValueError):
                os.utime(leaf, (member.mtime, member.mtime), dir_fd=parent, follow_symlinks=False)
        else:
            _hard_link(member, root, parent, leaf)
    finally:
        os.close(parent)


def _hard_link(member: tarfile.TarInfo, root: int, parent: int, leaf: str) -> None:
    """A hard link to a regular file extracted earlier (tar names its target by member name)."""
    target = member.linkname
    parts = [p for p in target.split("/") if p not in ("", ".")]
    if os.path.isabs(target) or ".." in parts or not parts:
        raise tarfile.TarError(f"{member.name!r} links outside the workspace")
    try:
        source_dir = _walk(root, parts[:-1], None)
    except FileNotFoundError:
        raise tarfile.TarError(f"{member.name!r} links to a missing file {target!r}") from None
    try:
        try:
            st = os.stat(parts[-1], dir_fd=source_dir, follow_symlinks=False)
        except FileNotFoundError:
            raise tarfile.TarError(f"{member.name!r} links to a missing file {target!r}") from None
        if not stat.S_ISREG(st.st_mode):
            raise tarfile.TarError(f"{member.name!r} links to {target!r}, not a regular file")
        _clear(parent, leaf)
        os.link(parts[-1], leaf, src_dir_fd=source_dir, dst_dir_fd=parent, follow_symlinks=False)
    finally:
        os.close(source_dir)


def _is_dir(parent: int, name: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def _clear(parent: int, name: str) -> None:
    """Remove what is at ``name`` (a member replaces it); a link is removed, not followed."""
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=parent)
    else:
        os.unlink(name, dir_fd=parent)


def _file_mode(mode: int) -> int:
    """No setuid/setgid/sticky, no group/other write; owner read-write; executable only
    when the owner could execute it (tarfile's ``data`` filter)."""
    mode &= 0o755
    if not mode & 0o100:
        mode &= ~0o111
    return mode | 0o600
