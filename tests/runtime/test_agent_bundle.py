"""Staging the controller's agent into a content-addressed bundle under the data directory."""

from __future__ import annotations

import io
import os
import shutil
import stat
import sys
import tarfile
from pathlib import Path

import docker
import pytest
from o16n_agent import protocol

from controller.errors import RuntimeFailure
from controller.runtime import agent_bundle
from controller.runtime.docker.containers import DockerContainers
from controller.runtime.docker.environments import DockerEnvironments
from controller.runtime.docker.gateway import DockerGateway
from controller.runtime.docker.image import IMAGE_DIR, content_hash, default_tag
from controller.runtime.sandboxes import Sandboxes
from controller.settings import Settings
from tests.runtime.test_agent_upgrade import agent_copy


def _copy_agent(dest: Path) -> Path:
    package = dest / "o16n_agent"
    shutil.copytree(agent_bundle.installed_package(), package)
    return package


def test_the_bundle_holds_the_agent_sources_only_world_readable(tmp_path: Path) -> None:
    source = _copy_agent(tmp_path / "src")
    (source / "__pycache__").mkdir(exist_ok=True)
    (source / "__pycache__" / "agent.cpython-311.pyc").write_bytes(b"stale")
    (source / "notes.txt").write_text("not code")
    old = os.umask(0o077)  # a strict umask must not make the bundle unreadable to containers
    try:
        bundle = agent_bundle.stage(tmp_path / "data", source)
    finally:
        os.umask(old)
    assert bundle.parent == tmp_path / "data" / "agent" and len(bundle.name) == 64
    staged = bundle / "o16n_agent"
    expected = sorted(p.name for p in source.glob("*.py"))
    assert sorted(p.name for p in staged.iterdir()) == sorted([*expected, "__pycache__"])
    # compiled at staging (the mount is read-only), never copied from the source
    pycs = sorted(p.name.split(".")[0] + ".py" for p in (staged / "__pycache__").iterdir())
    assert pycs == expected and b"stale" not in {
        p.read_bytes() for p in (staged / "__pycache__").iterdir()
    }
    assert (staged / "protocol.py").read_bytes() == (source / "protocol.py").read_bytes()
    for path in [bundle, staged, *staged.iterdir(), *(staged / "__pycache__").iterdir()]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), path
    assert [p.name for p in bundle.parent.iterdir()] == [bundle.name]  # no staging left


def test_the_same_sources_give_the_same_bundle_and_other_sources_another(tmp_path: Path) -> None:
    source = _copy_agent(tmp_path / "src")
    data = tmp_path / "data"
    first = agent_bundle.stage(data, source)
    assert agent_bundle.stage(data, source) == first
    protocol = source / "protocol.py"
    protocol.write_text(protocol.read_text() + "\n# changed\n")
    second = agent_bundle.stage(data, source)
    assert second != first and first.is_dir()
    assert agent_bundle.prune(second) == 1
    assert not first.exists() and second.is_dir()


def test_a_damaged_bundle_is_replaced(tmp_path: Path) -> None:
    source = _copy_agent(tmp_path / "src")
    data = tmp_path / "data"
    bundle = agent_bundle.stage(data, source)
    (bundle / "o16n_agent" / "agent.py").write_text("raise SystemExit('tampered')")
    (bundle / "o16n_agent" / "extra.py").write_text("")
    assert agent_bundle.stage(data, source) == bundle
    assert (bundle / "o16n_agent" / "agent.py").read_bytes() == (source / "agent.py").read_bytes()
    assert not (bundle / "o16n_agent" / "extra.py").exists()


def test_another_interpreter_stages_beside_the_bundle_in_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bytecode is the interpreter's: a controller upgraded to another Python keeps
    the bundle that the containers it adopts mount, and stages one of its own."""
    source = _copy_agent(tmp_path / "src")
    data = tmp_path / "data"
    first = agent_bundle.stage(data, source)
    mounted = os.open(first, os.O_RDONLY | os.O_DIRECTORY)  # as a container's mount holds it
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # no cpython-399 in the venv
    monkeypatch.setattr(sys.implementation, "cache_tag", "cpython-399")
    try:
        second = agent_bundle.stage(data, source)
        monkeypatch.undo()
        assert second != first
        assert first.stat().st_ino == os.fstat(mounted).st_ino  # the one in use, untouched
    finally:
        os.close(mounted)
    assert (first / "o16n_agent" / "agent.py").read_bytes() == (source / "agent.py").read_bytes()
    assert list((second / "o16n_agent" / "__pycache__").glob("agent.cpython-399.pyc"))
    assert agent_bundle.stage(data, source) == first


def test_the_bytecode_stays_in_the_bundle_whatever_the_pycache_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A controller run with ``PYTHONPYCACHEPREFIX`` still compiles into the bundle, where
    the agent's ``python -I`` looks, and finds its bundle whole at the next start rather
    than replace it under the containers that mount it."""
    source = _copy_agent(tmp_path / "src")
    data = tmp_path / "data"
    prefix = tmp_path / "prefix"
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # none of the test's own imports
    monkeypatch.setattr(sys, "pycache_prefix", str(prefix))
    bundle = agent_bundle.stage(data, source)
    mounted = os.open(bundle, os.O_RDONLY | os.O_DIRECTORY)  # as a container's mount holds it
    try:
        again = agent_bundle.stage(data, source)
        monkeypatch.undo()
        assert again == bundle and bundle.stat().st_ino == os.fstat(mounted).st_ino
    finally:
        os.close(mounted)
    assert not prefix.exists()
    pyc = f"agent.{sys.implementation.cache_tag}.pyc"
    assert (bundle / "o16n_agent" / "__pycache__" / pyc).is_file()


def test_a_crash_mid_copy_leaves_no_bundle_and_its_leftover_is_pruned(tmp_path: Path) -> None:
    source = _copy_agent(tmp_path / "src")
    data = tmp_path / "data"
    folder = agent_bundle.root(data)
    folder.mkdir(parents=True)
    leftover = folder / ".staging-crashed"
    (leftover / "o16n_agent").mkdir(parents=True)
    bundle = agent_bundle.stage(data, source)
    assert agent_bundle.prune(bundle) == 0  # a recent one may be another controller's
    old = os.stat(leftover).st_mtime - agent_bundle.STAGING_MAX_AGE - 1
    os.utime(leftover, (old, old))
    assert agent_bundle.prune(bundle) == 1
    assert [p.name for p in folder.iterdir()] == [bundle.name]


def test_symbolic_links_are_never_followed(tmp_path: Path) -> None:
    source = _copy_agent(tmp_path / "src")
    elsewhere = tmp_path / "secret.py"
    elsewhere.write_text("secret = 1")
    (source / "linked.py").symlink_to(elsewhere)
    with pytest.raises(RuntimeFailure, match="symbolic link"):
        agent_bundle.stage(tmp_path / "data", source)
    (source / "linked.py").unlink()

    data = tmp_path / "data2"
    data.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (data / "agent").symlink_to(target)  # the bundles' folder itself
    with pytest.raises(RuntimeFailure, match="symbolic link"):
        agent_bundle.stage(data, source)
    assert list(target.iterdir()) == []


def test_a_directory_without_the_agent_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeFailure, match="not the agent package"):
        agent_bundle.stage(tmp_path / "data", tmp_path / "empty")


@pytest.mark.docker
async def test_an_image_with_a_stale_agent_runs_the_mounted_one(
    settings: Settings, tmp_path: Path
) -> None:
    """An image made before the agent was mounted has one in its site-packages (and
    bytecode for it): the container still runs the controller's."""
    engine = docker.from_env()
    stale = f"o16n-snapshot:{settings.instance}-stale"
    site = "/opt/o16n/lib/python3.11/site-packages"
    old = agent_copy(tmp_path / "old", protocol.VERSION - 1) / "o16n_agent"
    (old / "__init__.py").write_text("raise SystemExit('the stale agent ran')\n")
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        tar.add(old, "o16n_agent")
        dockerfile = (
            f"FROM {default_tag()}\nUSER root\nCOPY o16n_agent {site}/o16n_agent\n"
            f"RUN /opt/o16n/bin/python -m compileall -q {site}/o16n_agent "
            "&& rm -rf /opt/o16n-agent\n"  # as the images made before it was mounted
            f'LABEL o16n.instance="{settings.instance}"\nUSER 1000:1000\n'
        ).encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    context.seek(0)
    engine.images.build(fileobj=context, custom_context=True, tag=stale, rm=True)
    gateway = await DockerGateway.connect()
    environments = DockerEnvironments(gateway, settings, default_tag())
    agent = agent_bundle.stage(settings.data_dir)
    sandboxes = Sandboxes(DockerContainers(gateway, settings), environments, settings, agent)
    try:
        sandbox = await sandboxes.launch("probe", environment=stale)
        try:
            assert sandbox.link.hello["version"] == protocol.VERSION
            reply, _ = await sandbox.call("ping", timeout=10)
            assert reply["pong"] is True
            # the mount changes nothing of the image
            assert await environments.pristine(sandbox.handle)
        finally:
            await sandboxes.destroy(sandbox)
    finally:
        await sandboxes.close()
        await gateway.close()
        engine.images.remove(stale)


def test_the_image_tag_does_not_depend_on_the_agent(tmp_path: Path) -> None:
    copy = tmp_path / "runtime_image"
    shutil.copytree(IMAGE_DIR, copy, ignore=shutil.ignore_patterns("wheels", "__pycache__"))
    before = content_hash(copy)
    (copy / "o16n_agent" / "protocol.py").write_text("VERSION = 0\n")
    assert content_hash(copy) == before
    (copy / "Dockerfile").write_text((copy / "Dockerfile").read_text() + "\n# changed\n")
    assert content_hash(copy) != before
