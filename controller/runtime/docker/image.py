"""The runtime image: a tag that carries a hash of ``runtime_image/``, and its build.

The controller runs ``o16n-runtime:<hash>``; ``python -m controller image build`` makes it
when it is missing: choose a base (``BASE_IMAGE``, else ``python:3.11-slim`` when it can
be pulled, else ``o16n-base:bookworm`` built once with debootstrap), download wheels on
the host into the build context, then ``docker build`` with its progress shown.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

from controller.errors import RuntimeFailure
from controller.runtime.docker.gateway import DockerGateway
from controller.settings import Settings

REPOSITORY = "o16n-runtime"
SLIM_BASE = "python:3.11-slim"
LOCAL_BASE = "o16n-base:bookworm"
PROJECT_ROOT = Path(__file__).resolve().parents[3]
IMAGE_DIR = PROJECT_ROOT / "runtime_image"
BASE_SCRIPT = PROJECT_ROOT / "scripts" / "build-base-image.sh"
_SKIP_DIRS = {"wheels", "__pycache__"}
#: not in the image: containers mount the controller's agent (``agent_bundle``)
_SKIP_TOP = {"o16n_agent"}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def content_files(root: Path = IMAGE_DIR) -> list[Path]:
    """Files that define the image: all of ``runtime_image/`` but downloaded wheels, caches
    and the agent (which containers get from the controller, so changing it rebuilds nothing)."""
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        skipped = _SKIP_DIRS & set(rel.parts) or rel.parts[0] in _SKIP_TOP
        if path.is_file() and not skipped and path.suffix != ".pyc":
            files.append(path)
    return files


def content_hash(root: Path = IMAGE_DIR) -> str:
    digest = hashlib.sha256()
    for path in content_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def default_tag() -> str:
    return f"{REPOSITORY}:{content_hash()}"


def runtime_tag(settings: Settings) -> str:
    """The image containers run: the configured one, else the tag of ``runtime_image/``."""
    return settings.runtime_image or default_tag()


async def download_wheels(dest: Path, progress: Callable[[str], None]) -> None:
    """Fetch the pinned wheels for CPython 3.11 on x86-64 Linux into ``dest`` (cached)."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--abi",
        "cp311",
        "-d",
        str(dest),
        "-r",
        str(IMAGE_DIR / "requirements.txt"),
    ]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    progress(f"downloading wheels on the host into {dest} ...")
    await _run(cmd)


async def _run(cmd: list[str]) -> None:
    """Run a command with its output on our stderr; raise when it fails."""
    process = await asyncio.create_subprocess_exec(*cmd, stdout=sys.stderr, stderr=sys.stderr)
    if await process.wait() != 0:
        raise RuntimeFailure(f"command failed ({process.returncode}): {' '.join(cmd[:4])} ...")


async def choose_base(gateway: DockerGateway, progress: Callable[[str], None]) -> str:
    configured = os.environ.get("BASE_IMAGE")
    if configured:
        return configured
    if await gateway.image_exists(SLIM_BASE) or await gateway.pull(SLIM_BASE):
        return SLIM_BASE
    if not await gateway.image_exists(LOCAL_BASE):
        progress(f"{SLIM_BASE} cannot be pulled; building {LOCAL_BASE} with debootstrap (once)")
        await _run(["bash", str(BASE_SCRIPT), LOCAL_BASE])
    return LOCAL_BASE


async def ensure_image(
    gateway: DockerGateway, tag: str | None = None, *, progress: Callable[[str], None]
) -> str:
    """Build the runtime image unless a current one exists; returns its tag."""
    tag = tag or default_tag()
    if await gateway.image_exists(tag):
        progress(f"runtime image {tag} is up to date")
        return tag
    base = await choose_base(gateway, progress)
    await download_wheels(IMAGE_DIR / "wheels", progress)
    progress(f"building {tag} from {base}")
    await gateway.build(IMAGE_DIR, tag, {"BASE_IMAGE": base}, progress)
    progress(f"runtime image {tag} built")
    return tag


async def command(settings: Settings, action: str, progress: Callable[[str], None]) -> None:
    """``o16n image tag`` prints the runtime image's tag; ``o16n image build`` builds it
    unless it is up to date."""
    tag = runtime_tag(settings)
    if action == "tag":
        print(tag)
        return
    gateway = await DockerGateway.connect()
    try:
        await ensure_image(gateway, tag, progress=progress)
    finally:
        await gateway.close()
