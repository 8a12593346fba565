"""A real ``o16n serve`` process, for clients that need a URL and block (schemathesis)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import requests

from controller.runtime import fake
from tests.conftest import (
    ADMIN_PASSWORD,
    INSTANCE_PREFIX,
    INSTANCES,
    RUN_ID,
    database_env,
    drop_databases,
)


@dataclass
class LiveServer:
    url: str
    headers: dict[str, str]
    process: subprocess.Popen[bytes]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_server(
    *,
    engine: str = "docker",
    data_dir: Path | None = None,
    env: dict[str, str] | None = None,
    **settings: str,
) -> Generator[LiveServer, None, None]:
    """Serve until closed, on ``engine`` (``fake`` for a test that needs no Docker: pass
    ``tests.conftest.ENGINE``, the engine of the run). With ``data_dir`` (kept afterwards)
    a second server restarts the first; ``env`` adds to the process's environment
    (``PYTHONPATH``, say)."""
    own_dir = data_dir is None
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="o16n-", dir="/tmp"))
    port = _free_port()
    instance = f"{INSTANCE_PREFIX}{RUN_ID}-live"
    INSTANCES.add(instance)
    env = {
        **os.environ,
        "O16N_DATA_DIR": str(data_dir),
        "O16N_PORT": str(port),
        "O16N_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "O16N_INSTANCE": instance,
        "O16N_LOG_LEVEL": "WARNING",
        "O16N_LOG_FORMAT": "text",
        "O16N_ACCESS_LOG": "false",
        "O16N_ENGINE": engine,
        **database_env(data_dir),
        **{f"O16N_{k.upper()}": v for k, v in settings.items()},
        **(env or {}),
    }
    process = subprocess.Popen([sys.executable, "-m", "controller", "serve"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        token = None
        for _ in range(300):
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}")
            try:
                resp = requests.post(
                    f"{url}/login",
                    timeout=2,
                    json={"username": "admin", "password": ADMIN_PASSWORD},
                )
            except requests.ConnectionError:
                time.sleep(0.1)
                continue
            token = resp.json()["access_token"]
            break
        if token is None:
            raise RuntimeError("the server did not start")
        yield LiveServer(url, {"Authorization": f"Bearer {token}"}, process)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
        if own_dir:
            fake.purge(data_dir)  # the fake engine's agents outlive their server
            drop_databases(data_dir)
            shutil.rmtree(data_dir, ignore_errors=True)
