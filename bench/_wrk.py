"""Running ``wrk`` for the HTTP load benchmarks (status, consume).

The Lua script (``write_script``) adds the bearer token, optionally checks every answer,
and its ``done`` hook prints one ``WRK_JSON {...}`` line, so that the figures are read as
wrk computed them instead of parsed from its human-readable output.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from bench._server import BenchError

SCRIPT = """
wrk.method = "@METHOD@"
@BODY@
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer @TOKEN@"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non200 = 0
  badbody = 0
end

@RESPONSE@

function done(summary, latency, requests)
  local n, b = 0, 0
  for _, thread in ipairs(threads) do
    n = n + thread:get("non200")
    b = b + thread:get("badbody")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
    .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d,'
    .. '"non200":%d,"bad_body":%d,'
    .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max, n, b,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""

#: Counting answers that are not 200 or whose body lacks a Lua pattern (only when asked:
#: a ``response`` hook makes wrk read every body).
RESPONSE = """
function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
  elseif not (@CHECKS@) then
    badbody = badbody + 1
  end
end
"""


def write_script(
    path: Path, method: str, token: str, body: str | None = None, expect: tuple[str, ...] = ()
) -> Path:
    """A new Lua script readable only by us (it holds a bearer token): ``method`` with
    ``body``, and with ``expect`` (Lua patterns) every answer checked."""
    checks = " and ".join(f"string.find(body, '{pattern}')" for pattern in expect)
    text = (
        SCRIPT.replace("@METHOD@", method)
        .replace("@BODY@", f"wrk.body = '{body}'" if body is not None else "")
        .replace("@TOKEN@", token)
        .replace("@RESPONSE@", RESPONSE.replace("@CHECKS@", checks) if expect else "")
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    return path


def wrk(
    url: str,
    script: Path,
    connections: int,
    threads: int,
    duration: int,
    *,
    check_answers: bool = False,
    fail: bool = True,
) -> dict[str, Any]:
    """One wrk run: the script's summary plus ``rps``, ``connections`` and ``failures``
    (answers not 200, wrong bodies, socket errors).

    It fails on a status, connect or timeout error; with ``check_answers`` (the script
    counts ``non200`` and ``bad_body``) on any of those counts or any socket error. Without
    ``fail`` it raises on none of these: the caller reads ``failures``."""
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
    result["failures"] = failures(result)
    if fail and check_answers and (result["failures"] or any(errors.values())):
        raise BenchError(
            f"wrk against {url}: {result['non200']} answers not 200, {result['bad_body']} "
            f"bodies without the expected answer, errors {errors}"
        )
    if fail and not check_answers and (errors["status"] or errors["connect"] or errors["timeout"]):
        raise BenchError(f"wrk saw errors against {url}: {errors} (output: {done.stdout})")
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["connections"] = connections
    return result


def failures(result: dict[str, Any]) -> int:
    """Requests of a wrk run that went wrong: socket errors, answers that lacked the
    expected body, and answers that were not 200 (wrk counts a status of 400 and above,
    the script, when it checks answers, anything but 200: the same answer, counted once)."""
    errors = result["errors"]
    sockets = sum(int(errors[k]) for k in ("connect", "read", "write", "timeout"))
    return sockets + int(result["bad_body"]) + max(int(result["non200"]), int(errors["status"]))


def wrk_version() -> str:
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    text = done.stdout or done.stderr
    return text.splitlines()[0].strip() if text else ""
