"""``o16n serve`` when its start-up fails: the error, an exit code, and no process left."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import database_env

ROOT = Path(__file__).resolve().parents[1]


def test_serve_exits_when_the_engine_does_not_answer(tmp_path: Path) -> None:
    """Everything started before the engine (the database's thread among them) is closed
    again, so the process ends instead of hanging after printing the error."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("O16N_")}
    done = subprocess.run(
        [sys.executable, "-m", "controller", "serve"],
        env={
            **clean,
            "PYTHONPATH": f"{ROOT}:{ROOT / 'runtime_image'}",
            "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock",
            "O16N_ENGINE": "docker",
            "O16N_DATA_DIR": str(tmp_path / "data"),
            **database_env(tmp_path / "data"),
            "O16N_ADMIN_PASSWORD": "startup-test-password",
            "O16N_PORT": "0",
        },
        capture_output=True,
        text=True,
        timeout=120,  # a hang guard, not a measurement: the start fails within seconds
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "Docker engine does not answer" in done.stderr
    assert "Traceback" not in done.stderr
