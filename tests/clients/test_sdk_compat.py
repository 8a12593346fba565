"""``o16n_client.sdk_compat``: the SDK's consume-method factory fails on this Python, and
the patched one builds a method that calls ``_consume`` with the inputs by name."""

from __future__ import annotations

import inspect
import sys
from typing import Any

import azureml.common.utils
import azureml.deploy.server.service
import pytest

from o16n_client import sdk_compat


class _Service:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def _consume(self, inputs: dict[str, Any]) -> str:
        self.sent.append(inputs)
        return "result"


def _template(self: Any) -> None:  # what the SDK passes as ``fn``
    return None


def test_the_sdk_alone_fails_on_this_python() -> None:
    import importlib

    pristine = importlib.reload(azureml.common.utils)  # the module as installed
    try:
        assert sys.version_info >= (3, 8)
        with pytest.raises(TypeError):
            pristine.function_beget(_template, "score", ["self", "x"], "doc")
    finally:
        sdk_compat.patch()  # the reload undid it for the other tests


def test_patch_once_and_the_method_it_builds() -> None:
    sdk_compat.patch()
    assert sdk_compat.patch() is False
    assert azureml.common.utils.function_beget is sdk_compat.function_beget
    assert azureml.deploy.server.service.function_beget is sdk_compat.function_beget

    method = sdk_compat.function_beget(_template, "score", ["self", "x", "y"], "Score it.")
    assert method.__name__ == "score" and method.__doc__ == "Score it."
    assert list(inspect.signature(method).parameters) == ["self", "x", "y"]
    service = _Service()
    assert method(service, 1, y="two") == "result"
    assert service.sent == [{"x": 1, "y": "two"}]


def test_inputs_that_are_not_python_names_still_work() -> None:
    method = sdk_compat.function_beget(_template, "run", ["self", "from", "a b", "ok"])
    service = _Service()
    method(service, 1, 2, ok=3)
    assert service.sent == [{"from": 1, "a b": 2, "ok": 3}]
    with pytest.raises(ValueError, match="clash"):
        sdk_compat.function_beget(_template, "run", ["self", "self"])
    odd = sdk_compat.function_beget(_template, "not a name", ["self"])
    assert odd.__name__ == "not a name"
