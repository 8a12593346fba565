"""o16n's core API document (Swagger 2.0), served at ``GET /swagger.json``.

The document lives in ``swagger/o16n-swagger.json`` at the top of the repository; it
started from Microsoft's 9.3 document and is kept true to the routes this server has (a
test fails when the two disagree).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp import web

from controller.http.responses import json_response

DOCUMENT = Path(__file__).resolve().parents[1] / "swagger" / "o16n-swagger.json"
#: The document served, loaded once by ``create_app``.
SWAGGER = web.AppKey("swagger", dict[str, Any])

routes = web.RouteTableDef()


def load_document(path: Path = DOCUMENT) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        document: dict[str, Any] = json.load(f)
    return document


@routes.get("/swagger.json")
async def swagger_json(request: web.Request) -> web.Response:
    return json_response(request.app[SWAGGER])
