"""The one error an agent operation raises on purpose."""

from __future__ import annotations


class OpError(Exception):
    """A request the agent refuses. ``code`` tells the controller how to map it:
    ``not_found`` (404), ``invalid`` (400), ``too_large`` (413), anything else (500)."""

    def __init__(self, message: str, code: str = "error") -> None:
        super().__init__(message)
        self.code = code
