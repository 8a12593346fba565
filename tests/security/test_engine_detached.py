"""An engine ``scripts/ensure-docker.sh`` starts outlives the command that started it
(issue 9 item 7): signalling the process group of ``make run`` (Ctrl-C, a supervisor, CI
cleaning up) leaves the engine answering.

The machine's engine is shared and never touched: the script starts a *second* dockerd on
a socket, data root, exec root and pidfile of its own, without bridge or iptables, in a
network namespace of its own (a dockerd started with ``--bridge=none`` deletes the
``docker0`` bridge of the namespace it runs in), and the test stops that engine (by the pid
in its pidfile) and removes its directories whatever happens."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ensure-docker.sh"


@dataclass
class SeparateEngine:
    root: Path
    env: dict[str, str]

    @property
    def host(self) -> str:
        return self.env["DOCKER_HOST"]

    @property
    def pidfile(self) -> Path:
        return self.root / "docker.pid"

    def pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int(self.pidfile.read_text().strip())
        return None

    def answers(self) -> bool:
        done = subprocess.run(
            ["docker", "-H", self.host, "info", "--format", "{{.ID}}"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        return done.returncode == 0


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _stop(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM (dockerd then stops its containerd), SIGKILL if it does not end."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def separate_engine() -> Iterator[SeparateEngine]:
    if os.geteuid() != 0 or not all(shutil.which(c) for c in ("dockerd", "setsid", "unshare")):
        pytest.skip("a second Docker engine needs root, dockerd, setsid and unshare")
    root = Path(tempfile.mkdtemp(prefix="o16n-dk-", dir="/tmp"))  # short: socket paths
    (root / "daemon.json").write_text("{}")  # not the machine's /etc/docker/daemon.json
    namespace = f"o16n-test-{secrets.token_hex(3)}"
    args = [
        f"--data-root={root / 'data'}",
        f"--exec-root={root / 'exec'}",
        f"--pidfile={root / 'docker.pid'}",
        f"--config-file={root / 'daemon.json'}",
        f"--containerd-namespace={namespace}",
        f"--containerd-plugins-namespace={namespace}-plugins",
        "--bridge=none",
        "--iptables=false",
        "--ip-forward=false",
        "--ip-masq=false",
    ]
    env = {
        **os.environ,
        "DOCKER_HOST": f"unix://{root / 'docker.sock'}",
        "O16N_DOCKERD_ARGS": " ".join(args),
        "O16N_DOCKERD_LOG": str(root / "dockerd.log"),
    }
    engine = SeparateEngine(root, env)
    try:
        yield engine
    finally:
        pid = engine.pid()
        if pid is not None:
            _stop(pid)
        containerd = root / "exec" / "containerd" / "containerd.pid"  # if dockerd left it
        with contextlib.suppress(OSError, ValueError):
            _stop(int(containerd.read_text().strip()), timeout=10)
        mounts = [
            line.split()[1]
            for line in Path("/proc/self/mounts").read_text().splitlines()
            if line.split()[1].startswith(str(root) + "/")
        ]
        for mount in sorted(mounts, reverse=True):
            subprocess.run(["umount", "--lazy", mount], check=False)
        shutil.rmtree(root, ignore_errors=True)


def test_the_engine_outlives_the_process_group_of_make_run(
    separate_engine: SeparateEngine,
) -> None:
    engine = separate_engine
    assert not engine.answers()
    # `make run`: the script, then the server in the foreground, in a process group (and
    # session) of its own, as a terminal or a supervisor would start it.
    make_run = subprocess.Popen(
        # unshare execs bash in a new network namespace: the group leader is still this pid
        ["unshare", "--net", "--", "bash", "-c", f"bash {SCRIPT} && echo ready && exec sleep 600"],
        env=engine.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    group = make_run.pid
    try:
        assert make_run.stdout is not None
        assert make_run.stdout.readline().strip() == b"ready", (
            engine.root / "dockerd.log"
        ).read_text(errors="replace")[-3000:]
        pid = engine.pid()
        assert pid is not None and _alive(pid)
        assert os.getpgid(pid) != group and os.getsid(pid) != os.getsid(group)
        assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
        assert os.readlink(f"/proc/{pid}/fd/1") == str(engine.root / "dockerd.log")

        # Ctrl-C in the terminal, then a supervisor's SIGTERM, to the whole group
        os.killpg(group, signal.SIGINT)
        time.sleep(0.5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        make_run.wait(timeout=30)
        time.sleep(3)  # an engine that was hit would be shutting down by now

        assert _alive(pid)
        assert engine.answers()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        make_run.wait(timeout=30)
        if make_run.stdout is not None:
            make_run.stdout.close()
