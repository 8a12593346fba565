"""Microsoft's ``azureml-model-management-sdk`` 1.0.1b6.post1 on Python 3.8 and newer.

The SDK builds each web service's consume method (named after the service's
``operationId``, one parameter per input) in ``azureml.common.utils.function_beget``, by
calling ``types.CodeType`` with Python 3.7's argument list. Since Python 3.8 that raises
``TypeError: code expected at least 16 arguments``, so ``get_service``, ``deploy``,
``redeploy`` and ``list_services`` fail before anything is sent. ::

    from o16n_client import sdk_compat
    sdk_compat.patch()                      # once, before using the SDK
    from azureml.deploy import DeployClient

``patch`` replaces that one helper with one that builds the same method — same name, same
parameters, same docstring, same behaviour as the SDK's: collect the arguments by input
name and call ``self._consume`` — from checked source text instead of a hand-made code
object. Nothing on the wire changes. It patches once; calling it again does nothing.
"""

from __future__ import annotations

import keyword
from collections.abc import Callable
from typing import Any

__all__ = ["function_beget", "patch"]

_SELF = "self"


def _parameter(name: str, index: int) -> str:
    """``name`` when it can be a Python parameter, else a positional stand-in."""
    if name.isidentifier() and not keyword.iskeyword(name):
        return name
    return f"_o16n_input_{index}"


def function_beget(fn: Any, fn_name: str, fn_args: list[str], doc: str = "") -> Callable[..., Any]:
    """The SDK's consume method for a service: ``fn_name(self, <inputs…>)`` calls
    ``self._consume({input name: value, …})``. (``fn``, the SDK's template, is not needed:
    this is what it does.)"""
    if not fn_args:
        raise ValueError("a consume method takes at least 'self'")
    name = fn_name if fn_name.isidentifier() and not keyword.iskeyword(fn_name) else "consume"
    inputs = list(fn_args[1:])
    params = [_parameter(n, i) for i, n in enumerate(inputs)]
    if len(set(params)) != len(params) or _SELF in params:
        raise ValueError(f"the service's input names clash: {inputs!r}")
    mapping = ", ".join(f"{n!r}: {p}" for n, p in zip(inputs, params, strict=True))
    source = (
        f"def {name}({', '.join([_SELF, *params])}):\n    return {_SELF}._consume({{{mapping}}})\n"
    )
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<o16n sdk_compat {name}>", "exec"), {}, namespace)  # noqa: S102 (names checked above)
    made: Callable[..., Any] = namespace[name]
    made.__name__ = made.__qualname__ = fn_name
    made.__doc__ = doc
    return made


def patch() -> bool:
    """Make the installed SDK use :func:`function_beget`; ``True`` if this call patched it,
    ``False`` if it was patched already."""
    import azureml.common.utils as utils
    import azureml.deploy.server.service as service

    if utils.function_beget is function_beget and service.function_beget is function_beget:
        return False
    utils.function_beget = function_beget
    service.function_beget = function_beget  # it imported the name itself
    return True
