"""The agent every container runs, staged from the controller's own installation.

The agent never comes from an image: a snapshot's or a service's image keeps the agent of
the day it was made, and a controller speaking another protocol version could not talk to
it, so an upgrade would strand every snapshot and service. At start the controller copies
its own ``o16n_agent`` package (``*.py`` files only) into ``<data>/agent/<sha256>/``; every
container mounts that directory read-only and runs the agent from it (``spec.AGENT_MOUNT``).

Bundles are content-addressed and written into a temporary directory that is then renamed,
so two controllers starting at once, or a crash mid-copy, leave a whole bundle or none. No
symbolic link is followed, in the source or under the data directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import py_compile
import re
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath

import o16n_agent

from controller.errors import RuntimeFailure

PACKAGE = "o16n_agent"
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_STAGING = ".staging-"
STAGING_MAX_AGE = 3600.0  # seconds after which a temporary directory is a crash's leftover
_NOFOLLOW = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def installed_package() -> Path:
    """The directory of the ``o16n_agent`` this controller imports (what it speaks)."""
    return Path(o16n_agent.__file__).absolute().parent


def root(data_dir: Path) -> Path:
    """Where the bundles live."""
    return Path(data_dir).absolute() / "agent"


def package_files(package: Path) -> dict[str, bytes]:
    """The package's ``*.py`` files by path relative to it (``/``-separated), caches left
    out. A symbolic link anywhere in it is refused rather than followed."""
    files: dict[str, bytes] = {}

    def walk(folder: Path, prefix: str) -> None:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_symlink():
                    raise RuntimeFailure(f"the agent package has a symbolic link: {entry.path}")
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != "__pycache__":
                        walk(Path(entry.path), f"{prefix}{entry.name}/")
                elif entry.is_file(follow_symlinks=False) and entry.name.endswith(".py"):
                    files[prefix + entry.name] = _read(Path(entry.path))

    walk(package, "")
    if "__init__.py" not in files or "__main__.py" not in files:
        raise RuntimeFailure(f"{package} is not the agent package")
    return files


def digest(files: dict[str, bytes]) -> str:
    """The bundle's name: its files, and the interpreter its bytecode is for. A controller
    moved to another Python stages a bundle of its own beside the one the containers it
    adopted still mount, rather than find that one "damaged" and replace it under them."""
    sha = hashlib.sha256(f"{sys.implementation.cache_tag}\0".encode())
    for name in sorted(files):
        sha.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return sha.hexdigest()


def stage(data_dir: Path, package: Path | None = None) -> Path:
    """The bundle directory of ``package`` (default: this controller's agent), made if it
    is missing or not exactly the package; it holds ``o16n_agent/``. Blocking: run it on a
    thread."""
    files = package_files(package or installed_package())
    folder = root(data_dir)
    folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o755)
    _real_dir(folder)
    target = folder / digest(files)
    if _holds(target, files):
        return target
    if target.is_symlink() or target.exists():  # damaged (a crash leaves none): replace it
        _discard(target)
    staging = Path(tempfile.mkdtemp(prefix=_STAGING, dir=folder))
    try:
        _write(staging, files)
        staging.chmod(0o755)  # containers read it (mounted read-only)
        try:
            staging.rename(target)
        except OSError:  # another controller staged the same bundle meanwhile
            if not _holds(target, files):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def prune(bundle: Path) -> int:
    """Remove the other bundles beside ``bundle``, and temporary directories a crash left;
    returns how many. Only when no container runs on them: at a start that adopted none."""
    removed = 0
    folder = bundle.parent
    with os.scandir(folder) as entries:
        names = [
            (e.name, e.stat(follow_symlinks=False).st_mtime)
            for e in entries
            if e.is_dir(follow_symlinks=False)
        ]
    for name, mtime in names:
        stale_staging = name.startswith(_STAGING) and time.time() - mtime > STAGING_MAX_AGE
        if name != bundle.name and (_DIGEST.match(name) or stale_staging):
            _discard(folder / name)
            removed += 1
    return removed


def _real_dir(path: Path) -> None:
    """Refuse a path that is a symbolic link or not a directory."""
    mode = os.lstat(path).st_mode
    if not stat.S_ISDIR(mode):
        raise RuntimeFailure(f"{path} is not a directory (a symbolic link is not followed)")


def _read(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def _write(staging: Path, files: dict[str, bytes]) -> None:
    """The package under ``staging``: directories 0755, files 0644 (whatever the umask)."""
    package = staging / PACKAGE
    for name in sorted(files):
        path = package / name
        for parent in reversed(path.relative_to(staging).parents[:-1]):
            with contextlib.suppress(FileExistsError):
                (staging / parent).mkdir()
                (staging / parent).chmod(0o755)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(files[name])
            handle.flush()
            os.fchmod(handle.fileno(), 0o644)
            os.fsync(handle.fileno())
        # compiled here: containers cannot (the mount is read-only), and would at every start
        pyc = package / _cached(name)
        py_compile.compile(str(path), str(pyc), f"/opt/o16n-agent/{PACKAGE}/{name}", doraise=True)
        pyc.parent.chmod(0o755)
        pyc.chmod(0o644)


def _cached(name: str) -> str:
    """The bytecode file of module file ``name``, relative like it: in ``__pycache__``
    beside it, where the agent's ``python -I`` looks, whatever ``PYTHONPYCACHEPREFIX``
    the controller runs with (``cache_from_source`` would put it under that prefix)."""
    path = PurePosixPath(name)
    return str(path.parent / "__pycache__" / f"{path.stem}.{sys.implementation.cache_tag}.pyc")


def _holds(target: Path, files: dict[str, bytes]) -> bool:
    """Whether ``target`` is a real directory holding exactly ``files``, no more."""
    try:
        _real_dir(target)
        _real_dir(target / PACKAGE)
        return package_files(target / PACKAGE) == files and _entries(target) == {
            f"{PACKAGE}/{p}" for p in _expected(files)
        } | {PACKAGE}
    except (OSError, RuntimeFailure):
        return False


def _expected(files: dict[str, bytes]) -> set[str]:
    """Every path a bundle of ``files`` holds under its package: files, their bytecode and
    the directories of both."""
    paths = set(files) | {_cached(name) for name in files}
    return paths | {p.as_posix() for path in paths for p in Path(path).parents if p.parts}


def _entries(target: Path) -> set[str]:
    found: set[str] = set()
    for folder, dirs, names in os.walk(target):
        rel = Path(folder).relative_to(target)
        for name in dirs + names:
            found.add((rel / name).as_posix())
    return found


def _discard(path: Path) -> None:
    """Move ``path`` aside, then delete it: a half-deleted bundle is never seen."""
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return
    aside = path.with_name(f"{_STAGING}gone-{os.getpid()}-{path.name}")
    path.rename(aside)
    shutil.rmtree(aside, ignore_errors=True)
