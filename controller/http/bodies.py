"""Reading request bodies into pydantic models, with errors that name the field.

ML Server's ASP.NET binder matched JSON property names case-insensitively, and the
Python SDK's own models sometimes send snake_case (``input_parameters``). So before
validation, each key is matched to a model field by its letters alone: case and
underscores are ignored (``InitialPoolSize``, ``initialPoolSize``, ``initial_pool_size``).
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from controller.errors import BadRequestError, ValidationFailed

M = TypeVar("M", bound=BaseModel)

#: the body as ``read_json`` parsed it, so that a second reader (the audit trail) does not
#: parse a large publish body again on the event loop
PARSED_BODY = web.RequestKey("o16n_parsed_body", object)


def loads(data: bytes) -> Any:
    """Strict JSON (orjson); ``ValueError`` when it is not, NaN and infinities included."""
    return orjson.loads(data)


def _fold(name: str) -> str:
    return name.replace("_", "").lower()


async def read_json(request: web.Request) -> Any:
    """The request body as JSON; 400 saying why when it is not."""
    raw = await request.read()
    if not raw.strip():
        raise BadRequestError("the request body is empty; a JSON document was expected")
    try:
        data = loads(raw)
    except UnicodeDecodeError:
        raise BadRequestError("the request body is not UTF-8 text") from None
    except ValueError as exc:
        raise BadRequestError(f"the request body is not valid JSON: {exc}") from None
    request[PARSED_BODY] = data
    return data


async def read_model(request: web.Request, model: type[M], *, allow_empty: bool = False) -> M:
    """Parse the body as JSON and validate it as ``model``."""
    if allow_empty and not (await request.read()).strip():
        data: Any = {}
    else:
        data = await read_json(request)
    return validate(model, data)


def validate(model: type[M], data: Any) -> M:
    if not isinstance(data, dict):
        raise ValidationFailed(f"the request body must be a JSON object, not {_json_kind(data)}")
    try:
        return model.model_validate(normalize_keys(model, data))
    except ValidationError as exc:
        raise ValidationFailed(describe_validation_error(exc)) from None


def normalize_keys(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """Rename keys of ``data`` to ``model``'s field names, ignoring case and underscores."""
    index = _field_index(model)
    out: dict[str, Any] = {}
    for key, value in data.items():
        out[index.get(_fold(key), key)] = value
    return out


@functools.cache
def _field_index(model: type[BaseModel]) -> dict[str, str]:
    """Folded field names and aliases of ``model`` → field names (built once per model)."""
    index: dict[str, str] = {}
    for name, field in model.model_fields.items():
        index[_fold(name)] = name
        if field.alias:
            index[_fold(field.alias)] = name
    return index


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "body"
        if err["type"] == "extra_forbidden":
            parts.append(f"'{where}' is not a known field")
        else:
            parts.append(f"'{where}': {err['msg']}")
    return "invalid request: " + "; ".join(parts)


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
