"""Run every benchmark, one after another, stopping at the first that fails (``make bench``).

Each runs as its own ``python -m bench.<name>`` subprocess with its default options:
status, sessions, idle, consume, batch, realtime. One at a time: they share the machine's cores.
restarts and memory are left out (minutes long; memory needs about 11 GiB free).

    .venv/bin/python -m bench.run_all
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import Any

from bench._server import PROJECT_ROOT

BENCHMARKS = ["status", "sessions", "idle", "consume", "batch", "realtime"]


def main(argv: list[str] | None = None) -> int:
    if argv if argv is not None else sys.argv[1:]:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    current: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, frame: Any) -> None:  # SIGTERM: let the benchmark clean up
        for child in current:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    names = BENCHMARKS
    started = time.monotonic()
    for name in names:
        print(f"== bench.{name}", flush=True)
        child = subprocess.Popen([sys.executable, "-m", f"bench.{name}"], cwd=PROJECT_ROOT)
        current[:] = [child]
        try:
            code = child.wait()
        except KeyboardInterrupt:  # Ctrl-C reached the child too: let it clean up
            code = child.wait()
            print(f"bench.run_all: interrupted during bench.{name}", file=sys.stderr)
            return 130
        if code != 0:
            print(f"bench.run_all: bench.{name} failed with exit code {code}", file=sys.stderr)
            return code if code > 0 else 1
        print(flush=True)
    print(f"bench.run_all: {len(names)} benchmarks done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
