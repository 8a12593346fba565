"""docs/haproxy.cfg is a configuration Debian's HAProxy accepts, and the one the design shows."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_documented_configuration_is_the_file() -> None:
    design = (DOCS / "web-nodes.md").read_text()
    shown = design.split("```haproxy\n", 1)[1].split("```", 1)[0]
    assert shown in (DOCS / "haproxy.cfg").read_text()


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="HAProxy is not installed")
def test_haproxy_accepts_the_configuration() -> None:
    haproxy = shutil.which("haproxy")
    assert haproxy is not None
    result = subprocess.run(
        [haproxy, "-c", "-f", str(DOCS / "haproxy.cfg")],
        env={**os.environ, "O16N_HEALTH_TOKEN": "checked"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
