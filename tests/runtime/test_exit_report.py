"""How a container's end is told to users (``ExitReport.describe``): whatever the engine
knows of it, and nothing it does not. No fixture, no Docker."""

from __future__ import annotations

import pytest

from controller.runtime.containers import ExitReport


@pytest.mark.parametrize(
    ("report", "told"),
    [
        (ExitReport("exited", 1, False), "the container exited with code 1"),
        (ExitReport("exited", 0, False, "boom"), "the container exited with code 0: boom"),
        (ExitReport("exited", 137, False), "the container was killed by signal 9"),
        (ExitReport("exited", 137, True), "the container ran out of memory and was killed"),
        (ExitReport("missing", None, False), "the container no longer exists"),
        (ExitReport("exited", None, False), "the container exited with an unknown exit code"),
        (
            ExitReport("exited", None, False, "it ended while no controller watched it"),
            "the container exited with an unknown exit code: "
            "it ended while no controller watched it",
        ),
    ],
)
def test_describe(report: ExitReport, told: str) -> None:
    assert report.describe() == told
