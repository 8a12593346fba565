"""Running ``wrk`` for the HTTP load benchmarks (status, consume).

Each script's Lua ``done`` hook prints one ``WRK_JSON {...}`` line, so that the figures
are read as wrk computed them instead of parsed from its human-readable output.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from bench._server import BenchError


def write_script(path: Path, text: str) -> None:
    """A new Lua script readable only by us (it holds a bearer token)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def wrk(
    url: str,
    script: Path,
    connections: int,
    threads: int,
    duration: int,
    *,
    check_answers: bool = False,
) -> dict[str, Any]:
    """One wrk run: the script's summary plus ``rps`` and ``connections``.

    It fails on a status, connect or timeout error; with ``check_answers`` (the script
    counts ``non200`` and ``bad_body``) on any of those counts or any socket error."""
    cmd = [
        "wrk",
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    for line in done.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            result: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
            break
    else:
        raise BenchError(f"no summary in wrk's output:\n{done.stdout}")
    errors = result["errors"]
    if check_answers:
        if result["non200"] or result["bad_body"] or any(errors.values()):
            raise BenchError(
                f"wrk against {url}: {result['non200']} answers not 200, {result['bad_body']} "
                f"bodies without the expected answer, errors {errors}"
            )
    elif errors["status"] or errors["connect"] or errors["timeout"]:
        raise BenchError(f"wrk saw errors against {url}: {errors} (output: {done.stdout})")
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["connections"] = connections
    return result


def wrk_version() -> str:
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    text = done.stdout or done.stderr
    return text.splitlines()[0].strip() if text else ""
