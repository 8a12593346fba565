"""The batch part of a per-service Swagger document (API.md §6.1)."""

from __future__ import annotations

from typing import Any

from controller.store.services import ServiceRecord

_ERROR = {"$ref": "#/definitions/Error"}


def _op(op_id: str, summary: str, **extra: Any) -> dict[str, Any]:
    op: dict[str, Any] = {
        "tags": ["Batch"],
        "summary": summary,
        "description": summary,
        "operationId": op_id,
        "security": [{"Bearer": []}],
        "parameters": [],
        "responses": {"default": {"description": "Unexpected error", "schema": _ERROR}},
    }
    op.update(extra)
    return op


def _path_param(name: str, kind: str = "string") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "type": kind}


def document(record: ServiceRecord) -> dict[str, Any]:
    base = f"/api/{record.name}/{record.version}/batch"
    strings = {"type": "array", "items": {"type": "string"}}
    start = _op(
        "StartBatchExecution",
        f"Consume the {record.name} web service asynchronously.",
        parameters=[
            {
                "name": "BatchWebServiceParameters",
                "in": "body",
                "required": True,
                "schema": {"type": "array", "items": {"$ref": "#/definitions/InputParameters"}},
            },
            {"name": "parallelCount", "in": "query", "required": False, "type": "integer",
             "format": "int32", "description": "Records processed at once (default 10)."},
        ],
    )  # fmt: skip
    start["responses"]["202"] = {
        "description": "Accepted",
        "schema": {"$ref": "#/definitions/StartBatchExecutionResponse"},
    }
    start["responses"]["400"] = {"description": "Bad Request", "schema": _ERROR}
    listing = _op("GetBatchExecutions", "The batch executions of this service.")
    listing["responses"]["200"] = {"description": "OK", "schema": strings}
    status = _op(
        "GetBatchExecutionStatus",
        "The state and results of a batch execution.",
        parameters=[
            _path_param("executionId"),
            {"name": "showPartialResults", "in": "query", "required": False, "type": "boolean"},
        ],
    )
    status["responses"]["200"] = {
        "description": "OK",
        "schema": {"$ref": "#/definitions/BatchWebServiceResult"},
    }
    cancel = _op(
        "CancelAndDeleteBatchExecution",
        "Cancel a batch execution and delete it with its results.",
        parameters=[_path_param("executionId")],
    )
    cancel["responses"]["200"] = {"description": "OK", "schema": strings}
    files = _op(
        "GetBatchExecutionFiles",
        "The output files of one record of a batch execution.",
        parameters=[_path_param("executionId"), _path_param("index", "integer")],
    )
    files["responses"]["200"] = {"description": "OK", "schema": strings}
    one_file = _op(
        "GetBatchExecutionFile",
        "One output file of one record of a batch execution.",
        parameters=[
            _path_param("executionId"),
            _path_param("index", "integer"),
            _path_param("fileName"),
        ],
        produces=["application/octet-stream", "application/json"],
    )
    one_file["responses"]["200"] = {
        "description": "OK",
        "schema": {"type": "string", "format": "binary"},
    }
    return {
        "paths": {
            base: {"post": start, "get": listing},
            base + "/{executionId}": {"get": status, "delete": cancel},
            base + "/{executionId}/{index}/files": {"get": files},
            base + "/{executionId}/{index}/files/{fileName}": {"get": one_file},
        },
        "definitions": {
            "StartBatchExecutionResponse": {
                "type": "object",
                "properties": {
                    "batchExecutionId": {"type": "string"},
                    "BatchExecutionId": {"type": "string"},
                },
            },
            "BatchItemResult": {
                "description": "A record's result; null while the record has not finished.",
                "allOf": [{"$ref": "#/definitions/WebServiceResult"}],
                "x-nullable": True,
            },
            "BatchWebServiceResult": {
                "type": "object",
                "properties": {
                    "state": {
                        "type": "string",
                        "enum": ["Pending", "InProgress", "Complete", "Failed", "Canceled"],
                    },
                    "completedItemCount": {"type": "integer", "format": "int32"},
                    "totalItemCount": {"type": "integer", "format": "int32"},
                    "parallelCount": {"type": "integer", "format": "int32"},
                    "batchExecutionResults": {
                        "type": "array",
                        "items": {"$ref": "#/definitions/BatchItemResult"},
                    },
                },
            },
        },
    }
