"""swagger/o16n-swagger.json is valid Swagger 2.0 and lists exactly the routes the app has."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient

from controller.admin.console import PATHS as CONSOLE_PATHS
from controller.app import create_app
from controller.docs import load_document
from controller.settings import Settings

# Operations served but deliberately left out of the core document.
UNDOCUMENTED: set[tuple[str, str]] = {("HEAD", "*")}
# The web console's pages are HTML for a browser, not API operations.
UNDOCUMENTED |= {("GET", path) for path in CONSOLE_PATHS}


def _app_operations(settings: Settings) -> set[tuple[str, str]]:
    app = create_app(settings)
    ops = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if route.method == "HEAD" or path is None:
            continue
        op = (route.method, re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", path))
        if op not in UNDOCUMENTED:
            ops.add(op)
    return ops


def _document_operations() -> set[tuple[str, str]]:
    document = load_document()
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }


def test_every_route_is_documented_and_every_documented_route_exists(settings: Settings) -> None:
    app_ops = _app_operations(settings)
    doc_ops = _document_operations()
    assert app_ops - doc_ops == set(), "routes missing from swagger/o16n-swagger.json"
    assert doc_ops - app_ops == set(), "documented operations the server does not have"


def test_document_is_valid_swagger_2() -> None:
    from swagger_spec_validator.validator20 import validate_spec

    validate_spec(load_document())


async def test_document_is_served(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    resp = await client.get("/swagger.json", headers=admin_headers)
    assert resp.status == 200
    body = await resp.json()
    assert body["swagger"] == "2.0"
    assert body["paths"]["/login"]["post"]["operationId"] == "login"
