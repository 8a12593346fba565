"""The one thing Microsoft's SDK 1.0.1b6.post1 cannot do on Python 3.8+, patched client-side.

``azureml.common.utils.function_beget`` builds each service's consume method (named after
its ``operationId``) by calling ``types.CodeType`` with Python 3.7's 13-argument signature;
since Python 3.8 that raises ``TypeError: code expected at least 16 arguments``, so
``get_service``, ``deploy`` and ``list_services`` fail before sending anything. This shim
builds the same method — same name, same parameters, same behaviour as the SDK's generic
``fn``: collect the arguments by input name and call ``self._consume`` — with plain
``exec``. It changes nothing on the wire; the server sees the SDK's requests unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


def function_beget(fn: Any, fn_name: str, fn_args: list[str], doc: str) -> Callable[..., Any]:
    for name in [fn_name, *fn_args]:
        if not name.isidentifier():
            raise ValueError(f"not an identifier: {name!r}")
    inputs = fn_args[1:]
    source = (
        f"def {fn_name}({', '.join(fn_args)}):\n"
        f"    return {fn_args[0]}._consume({{{', '.join(f'{n!r}: {n}' for n in inputs)}}})\n"
    )
    namespace: dict[str, Any] = {}
    exec(source, {}, namespace)
    made: Callable[..., Any] = namespace[fn_name]
    made.__doc__ = doc
    return made


@pytest.fixture(autouse=True)
def _sdk_on_modern_python(monkeypatch: pytest.MonkeyPatch) -> None:
    import azureml.common.utils
    import azureml.deploy.server.service

    monkeypatch.setattr(azureml.common.utils, "function_beget", function_beget)
    monkeypatch.setattr(azureml.deploy.server.service, "function_beget", function_beget)
