"""Workspace objects (dill) and workspace tarballs (snapshots).

A workspace tarball holds every file of the working directory plus one
``.o16n-workspace/<name>.dill`` member per global that dill could serialize. Names that
could not be serialized are reported, not fatal. Restoring extracts files with tarfile's
``data`` filter (PEP 706) — or, on a Python without it (Debian's 3.11.2), an equivalent
check — and loads the objects into the namespace, snapshot values winning.
"""

from __future__ import annotations

import copy
import io
import os
import posixpath
import tarfile
import types
from typing import Any

import dill

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
    except Exception as exc:  # whatever the object's __reduce__ raises
        message = f"cannot serialize {name!r}: {type(exc).__name__}: {exc}"
        raise OpError(message, "invalid") from None
    return data


def load_object(namespace: dict[str, Any], name: str, data: bytes) -> None:
    check_object_name(name)
    try:
        namespace[name] = dill.loads(data)  # noqa: S301 - inside the sandbox, by design
    except Exception as exc:
        raise OpError(
            f"cannot deserialize the value for {name!r} (a dill pickle is expected): "
            f"{type(exc).__name__}: {exc}",
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
                tar.add(os.path.join(workdir, entry), arcname=entry)
        for name in sorted(namespace):
            if name.startswith("__"):
                continue
            try:
                data = dill.dumps(namespace[name])
            except Exception as exc:
                skipped[name] = f"{type(exc).__name__}: {exc}"[:300]
                continue
            info = tarfile.TarInfo(f"{OBJECTS_DIR}/{name}.dill")
            info.size = len(data)
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
            saved.append(name)
    return buffer.getvalue(), saved, skipped


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
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise OpError(f"the workspace tarball cannot be restored: {exc}", "invalid") from None
    loaded = []
    for name, blob in blobs.items():
        load_object(namespace, name, blob)
        loaded.append(name)
    return sorted(loaded), files


def extract_data(tar: tarfile.TarFile, members: list[tarfile.TarInfo], dest: str) -> None:
    """``extractall(filter="data")``, with a faithful fallback where the filter is missing."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, members=members, filter="data")
        return
    safe = [_data_filter(m, dest) for m in members]
    tar.extractall(dest, members=safe)  # noqa: S202 - members checked by _data_filter


def _data_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """PEP 706's ``data`` filter: refuse what could escape ``dest`` or is not plain data."""
    dest = os.path.realpath(dest)
    name = member.name.lstrip("/")
    target = os.path.realpath(os.path.join(dest, name))
    if os.path.commonpath([target, dest]) != dest:
        raise tarfile.TarError(f"{member.name!r} would be extracted outside the workspace")
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        raise tarfile.TarError(f"{member.name!r} is a special file")
    if member.issym() or member.islnk():
        link = member.linkname
        if os.path.isabs(link):
            raise tarfile.TarError(f"{member.name!r} links to an absolute path")
        base = os.path.dirname(target) if member.issym() else dest
        if os.path.commonpath([os.path.realpath(os.path.join(base, link)), dest]) != dest:
            raise tarfile.TarError(f"{member.name!r} links outside the workspace")
    clean = copy.copy(member)
    clean.name = posixpath.normpath(name)
    if member.isfile() or member.isdir():
        mode = member.mode & 0o755  # no setuid/setgid/sticky, no group/other write
        if member.isfile():
            mode |= 0o600
            if not mode & 0o100:
                mode &= ~0o111
        clean.mode = mode
    clean.uid = clean.gid = 0
    clean.uname = clean.gname = ""
    return clean
