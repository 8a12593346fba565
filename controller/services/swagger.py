"""The per-service Swagger 2.0 document served at ``/api/{name}/{version}/swagger.json``
(API.md §6.1): literal paths for this service, typed input and output definitions, the
login operations and the bearer security definition — enough for a generator to build a
working client."""

from __future__ import annotations

import copy
from typing import Any

from o16n_agent.codec import canonical_type

from controller.services.realtime.model import (
    INPUT,
    OUTPUT,
    ModelSchema,
    frame_schema,
    load_schema,
)
from controller.sessions.models import CHANGED_TOTAL_DOC
from controller.store.services import ServiceRecord

_SCHEMAS: dict[str, dict[str, Any]] = {
    "numeric": {"type": "number", "format": "double"},
    "integer": {"type": "integer", "format": "int64"},
    "logical": {"type": "boolean"},
    "character": {"type": "string"},
    "vector": {"type": "array", "items": {}},
    "matrix": {"type": "array", "items": {"type": "array", "items": {}}},
    "data.frame": {"type": "object", "additionalProperties": {"type": "array", "items": {}}},
}

_ERROR = {"$ref": "#/definitions/Error"}
_RESULT = "#/definitions/WebServiceResult"


def parameter_schema(kind: str, declared: str, *, nullable: bool) -> dict[str, Any]:
    schema = copy.deepcopy(_SCHEMAS[kind])
    schema["description"] = declared
    if nullable:
        schema["x-nullable"] = True
    return schema


def _object(params: list[dict[str, str]], *, outputs: bool) -> dict[str, Any]:
    definition: dict[str, Any] = {
        "type": "object",
        "properties": {
            p["name"]: parameter_schema(
                canonical_type(p["type"]) or "character", p["type"], nullable=outputs
            )
            for p in params
        },
    }
    if params and not outputs:
        definition["required"] = [p["name"] for p in params]
    return definition


def result_definition(record: ServiceRecord) -> dict[str, Any]:
    result: dict[str, Any] = {
        "type": "object",
        "properties": {
            "success": {"type": "boolean", "description": "Whether the code ran without error."},
            "errorMessage": {"type": "string", "description": "The error, when it failed."},
            "consoleOutput": {"type": "string", "description": "What the code printed."},
            "changedFiles": {"type": "array", "items": {"type": "string"}},
            "changedFilesTotal": {
                "type": "integer",
                "description": CHANGED_TOTAL_DOC,
            },
            "outputParameters": {"$ref": "#/definitions/OutputParameters"},
        },
    }
    if record.output_files:
        result["properties"]["outputFiles"] = {
            "type": "object",
            "description": "Declared output files, base64-encoded; null when not produced.",
            "additionalProperties": {"type": "string", "format": "byte", "x-nullable": True},
        }
    return result


def _login_paths() -> dict[str, Any]:
    def op(op_id: str, summary: str, body: str, ref: str) -> dict[str, Any]:
        return {
            "tags": ["User"],
            "summary": summary,
            "operationId": op_id,
            "security": [],
            "parameters": [{"name": body, "in": "body", "required": True, "schema": {"$ref": ref}}],
            "responses": {
                "200": {
                    "description": "OK",
                    "schema": {"$ref": "#/definitions/AccessTokenResponse"},
                },
                "default": {"description": "Error", "schema": _ERROR},
            },
        }

    return {
        "/login": {
            "post": op("login", "Logs the user in", "loginRequest", "#/definitions/LoginRequest")
        },
        "/login/refreshToken": {
            "post": op(
                "renewToken",
                "Renews a token",
                "renewTokenRequest",
                "#/definitions/RenewTokenRequest",
            ),
            "delete": {
                "tags": ["User"],
                "summary": "Revokes a refresh token",
                "operationId": "revokeRefreshToken",
                "security": [],
                "parameters": [
                    {"name": "refreshToken", "in": "query", "required": True, "type": "string"}
                ],
                "responses": {
                    "200": {"description": "OK", "schema": {"type": "object"}},
                    "default": {"description": "Error", "schema": _ERROR},
                },
            },
        },
    }


def _common_definitions() -> dict[str, Any]:
    return {
        "LoginRequest": {
            "type": "object",
            "required": ["username", "password"],
            "properties": {"username": {"type": "string"}, "password": {"type": "string"}},
        },
        "RenewTokenRequest": {
            "type": "object",
            "required": ["refreshToken"],
            "properties": {"refreshToken": {"type": "string"}},
        },
        "AccessTokenResponse": {
            "type": "object",
            "properties": {
                "token_type": {"type": "string"},
                "access_token": {"type": "string"},
                "expires_in": {"type": "integer", "format": "int32"},
                "expires_on": {"type": "integer", "format": "int64"},
                "refresh_token": {"type": "string"},
            },
        },
        "Error": {
            "type": "object",
            "properties": {
                "code": {"type": "integer", "format": "int32"},
                "message": {"type": "string"},
                "fields": {"type": "string"},
                "exceptionType": {"type": "string"},
                "link": {"type": "string"},
                "requestId": {"type": "string"},
            },
        },
    }


def _frames(schema: ModelSchema) -> dict[str, Any]:
    """A realtime service's one input and one output, each a data frame with the model's
    typed columns (a generated client gets a class for each)."""
    definitions = {}
    for name, ref, columns, outputs in (
        (INPUT, "InputData", schema.input_columns(), False),
        (OUTPUT, "OutputData", schema.output_columns(), True),
    ):
        definitions[ref] = frame_schema(columns, outputs=outputs)
        frame: dict[str, Any] = {"$ref": f"#/definitions/{ref}"}
        if outputs:  # null when the request failed
            frame = {"allOf": [frame], "x-nullable": True}
        parameters: dict[str, Any] = {"type": "object", "properties": {name: frame}}
        if not outputs:
            parameters["required"] = [name]
        definitions["OutputParameters" if outputs else "InputParameters"] = parameters
    return definitions


def build(record: ServiceRecord, batch: dict[str, Any] | None = None) -> dict[str, Any]:
    """The document for one service version; ``batch`` adds the batch paths and
    definitions when batch consumption is served."""
    name, version = record.name, record.version
    path = f"/api/{name}/{version}"
    description = record.description or ""
    document: dict[str, Any] = {
        "swagger": "2.0",
        "info": {"title": name, "description": description, "version": version},
        "schemes": ["http", "https"],
        "consumes": ["application/json"],
        "produces": ["application/json"],
        "securityDefinitions": {
            "Bearer": {"type": "apiKey", "name": "Authorization", "in": "header"}
        },
        "tags": [{"name": name, "description": description}],
        "paths": {
            **_login_paths(),
            path: {
                "post": {
                    "tags": [name],
                    "summary": f"Consume the {name} web service.",
                    "description": f"Consume the {name} web service.",
                    "operationId": record.operation_id or "ConsumeWebService",
                    "security": [{"Bearer": []}],
                    "parameters": [
                        {
                            "name": "WebServiceParameters",
                            "in": "body",
                            "required": True,
                            "schema": {"$ref": "#/definitions/InputParameters"},
                        }
                    ],
                    "responses": {
                        "200": {"description": "OK", "schema": {"$ref": _RESULT}},
                        "400": {"description": "Bad Request", "schema": _ERROR},
                        "500": {"description": "Internal Server Error", "schema": _ERROR},
                        "default": {"description": "Unexpected error", "schema": _ERROR},
                    },
                }
            },
        },
        "definitions": {
            **_common_definitions(),
            "InputParameters": _object(record.inputs, outputs=False),
            "OutputParameters": _object(record.outputs, outputs=True),
            "WebServiceResult": result_definition(record),
        },
    }
    if record.model_schema is not None:
        document["definitions"].update(_frames(load_schema(record.model_schema)))
    if batch is not None:
        document["paths"].update(batch["paths"])
        document["definitions"].update(batch["definitions"])
    return document
