"""One bench run, from parsed options to its results file: what every bench's main shares.

Check the tools and the runtime image, turn SIGTERM into Ctrl-C, run in a scratch
directory whose servers are stopped and whose containers (and images) are swept however
the run ends, then report and write the figures with the run's details.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench._docker import preflight, scratch_dir
from bench._server import (
    BenchError,
    failed,
    finish,
    interrupt_on_sigterm,
    run_meta,
    stop_servers,
)


def run_bench(
    name: str,
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace, Path], dict[str, Any]],
    summarise: Callable[[dict[str, Any], argparse.Namespace], str],
    *,
    labels: Sequence[str],
    tools: Sequence[str] = ("docker",),
    images: bool = False,
    needs_image: bool = True,
    **meta: Any,
) -> int:
    """The bench's exit code: 2 if it cannot run here, 1 on an error, 130 after Ctrl-C."""
    unable = preflight(name, tools, args.image, args.tree, needs_image=needs_image)
    if unable is not None:
        return unable
    interrupt_on_sigterm()
    try:
        with scratch_dir(name, labels, images=images) as tmp:
            try:
                figures = run(args, tmp)
            finally:  # what the run did not stop (an error, Ctrl-C), before the sweep
                stop_servers()
    except (BenchError, KeyboardInterrupt) as exc:
        return failed(name, exc)
    text = summarise(figures, args)
    figures["meta"] = run_meta(name, args, **meta)
    return finish(name, figures, text, args.results)
