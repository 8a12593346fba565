"""bench/_docker.py's wait for an instance's idle containers, against readings given by hand."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from bench import _docker


def each(values: list[Any]) -> Iterator[Any]:
    """The values, then the last one forever."""
    return itertools.chain(values, itertools.repeat(values[-1]))


def fake_docker(
    monkeypatch: pytest.MonkeyPatch, ps: Iterator[list[str]], cpus: Iterator[float | None]
) -> None:
    """``docker ps`` answering from ``ps`` and the cgroups from ``cpus``, one per call
    each; no real second slept."""
    monkeypatch.setattr(_docker, "instance_containers", lambda label: next(ps))
    monkeypatch.setattr(_docker, "containers_cpu", lambda ids: next(cpus))
    monkeypatch.setattr(_docker.time, "sleep", lambda seconds: None)


def test_a_container_removed_while_watched_means_not_idle_yet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A closed session's container goes in the background: its cgroup vanishes between
    the two readings. That is activity, not CPU that cannot be read: the wait goes on."""
    ps = each([["session", "pool"], ["pool"], ["pool"], ["pool"]])
    fake_docker(monkeypatch, ps, each([5.0, None, 1.0, 1.001]))
    assert _docker.wait_containers_idle("o16n.instance=x", timeout=5) is not None


def test_cpu_that_cannot_be_read_gives_up_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_docker(monkeypatch, each([["pool"]]), each([None]))
    assert _docker.wait_containers_idle("o16n.instance=x", timeout=5) is None


def test_containers_busy_until_the_timeout_are_not_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_docker(monkeypatch, each([["pool"]]), (float(i) for i in itertools.count()))
    assert _docker.wait_containers_idle("o16n.instance=x", timeout=0.05) is None
