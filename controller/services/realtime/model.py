"""A realtime service's model as the controller knows it: the tensors of its ONNX graph and
the data-frame columns they map to, as a container reported them (so every field is
checked here), and the checks of what goes in and comes out of a request.

A consume request's ``inputData`` is checked against the columns before any container
is touched: a missing, short or mistyped column is a 400 naming it. A container's answer
is checked against the output columns before it reaches the caller."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

from controller.errors import AgentProtocolError, BadRequestError

#: element types a tensor may have, and the JSON values its columns take
FLOATS = frozenset({"float", "double"})
#: the largest finite float32
FLOAT32_MAX = 3.4028234663852886e38
INTEGERS: dict[str, tuple[int, int]] = {
    "int8": (-(1 << 7), (1 << 7) - 1),
    "int16": (-(1 << 15), (1 << 15) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1),
    "uint8": (0, (1 << 8) - 1),
    "uint16": (0, (1 << 16) - 1),
    "uint32": (0, (1 << 32) - 1),
    "uint64": (0, (1 << 64) - 1),
}
TYPES = FLOATS | set(INTEGERS) | {"bool", "string"}
#: bounds on what a container may describe (the controller keeps it in memory)
MAX_TENSORS = 256
MAX_COLUMNS = 10_000
MAX_NAME = 256

#: the one input and the one output of every realtime service (ML Server's)
INPUT = "inputData"
OUTPUT = "outputData"
DEFINITIONS_IN = [{"name": INPUT, "type": "data.frame"}]
DEFINITIONS_OUT = [{"name": OUTPUT, "type": "data.frame"}]
REALTIME = "Realtime"


@dataclass(frozen=True, slots=True)
class Tensor:
    """One input or output of the graph: its name, element type and the columns it takes
    (one per element of a row)."""

    name: str
    type: str
    columns: tuple[str, ...]

    def json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "columns": list(self.columns)}


@dataclass(frozen=True, slots=True)
class ModelSchema:
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]

    def json(self) -> dict[str, Any]:
        return {
            "inputs": [t.json() for t in self.inputs],
            "outputs": [t.json() for t in self.outputs],
        }

    def dumps(self) -> str:
        return json.dumps(self.json(), separators=(",", ":"))

    def input_columns(self) -> list[tuple[str, str]]:
        """Each input column and its element type, in the graph's order."""
        return [(c, t.type) for t in self.inputs for c in t.columns]

    def output_columns(self) -> list[tuple[str, str]]:
        return [(c, t.type) for t in self.outputs for c in t.columns]


def parse_schema(raw: Any) -> ModelSchema:
    """The schema a container sent, checked field by field (a container is not trusted:
    ``AgentProtocolError`` when it is malformed)."""
    if not isinstance(raw, dict):
        raise AgentProtocolError("the model check sent no schema")
    inputs = _tensors(raw.get("inputs"), "inputs")
    outputs = _tensors(raw.get("outputs"), "outputs")
    return ModelSchema(inputs, outputs)


def load_schema(text: str) -> ModelSchema:
    """A stored schema (written by ``ModelSchema.dumps`` after ``parse_schema``)."""
    return parse_schema(json.loads(text))


def _tensors(raw: Any, what: str) -> tuple[Tensor, ...]:
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_TENSORS:
        raise AgentProtocolError(f"the model check sent malformed {what}")
    tensors: list[Tensor] = []
    seen: set[str] = set()
    total = 0
    for item in raw:
        if not isinstance(item, dict):
            raise AgentProtocolError(f"the model check sent malformed {what}")
        name, kind, columns = item.get("name"), item.get("type"), item.get("columns")
        if not (
            _is_name(name)
            and kind in TYPES
            and isinstance(columns, list)
            and columns
            and all(_is_name(c) for c in columns)
        ):
            raise AgentProtocolError(f"the model check sent malformed {what}")
        total += len(columns)
        if total > MAX_COLUMNS:
            raise AgentProtocolError(f"the model has more than {MAX_COLUMNS} {what[:-1]} columns")
        if seen.intersection(columns) or len(set(columns)) != len(columns):
            raise AgentProtocolError(f"the model check sent repeated {what} columns")
        seen.update(columns)
        tensors.append(Tensor(str(name), str(kind), tuple(columns)))
    return tuple(tensors)


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_NAME and "\0" not in value


# --- requests --------------------------------------------------------------------------------


def check_frame(schema: ModelSchema, body: Any) -> dict[str, Any]:
    """The consume body's ``inputData``: every input column, as many rows in each, each
    value of the column's type; columns the model does not take are left out."""
    if not isinstance(body, dict) or INPUT not in body:
        raise BadRequestError(
            f"the request body must be a JSON object with '{INPUT}': "
            'a data frame as an object of columns, {"<column>": [values, ...], ...}'
        )
    frame = body[INPUT]
    if not isinstance(frame, dict):
        raise BadRequestError(
            f"'{INPUT}' must be an object of columns, {{\"<column>\": [values, ...], ...}}"
        )
    checked: dict[str, list[Any]] = {}
    rows: int | None = None
    first = ""
    for column, kind in schema.input_columns():
        if column not in frame:
            missing = [c for c, _ in schema.input_columns() if c not in frame]
            raise BadRequestError(
                f"'{INPUT}' has no column '{column}'"
                + (f" (missing: {', '.join(missing[:20])})" if len(missing) > 1 else "")
            )
        values = frame[column]
        if not isinstance(values, list):
            raise BadRequestError(f"column '{column}' must be an array of values")
        if rows is None:
            rows, first = len(values), column
            if rows == 0:
                raise BadRequestError(f"column '{column}' has no rows")
        elif len(values) != rows:
            raise BadRequestError(
                f"column '{column}' has {len(values)} rows, column '{first}' has {rows}"
            )
        bad = _first_mistyped(values, kind)
        if bad is not None:
            value = values[bad]
            beyond = kind in FLOATS and type(value) in (int, float)
            raise BadRequestError(
                f"column '{column}' ({_described(kind)}): row {bad} is {_shown(value)}"
                + (f", beyond what a {kind} holds" if beyond else "")
            )
        checked[column] = values
    return {INPUT: checked}


def _first_mistyped(values: list[Any], kind: str) -> int | None:
    """The index of the first value that is not of ``kind`` (``None``: all are)."""
    if kind in FLOATS:
        # beyond the type's range a number would become an infinity (or not convert)
        most = FLOAT32_MAX if kind == "float" else sys.float_info.max
        for i, v in enumerate(values):
            t = type(v)
            if t is float or t is int:
                if not -most <= v <= most:
                    return i
            elif v is not None:
                return i
        return None
    if kind in INTEGERS:
        low, high = INTEGERS[kind]
        for i, v in enumerate(values):
            if type(v) is not int or not low <= v <= high:
                return i
        return None
    wanted = bool if kind == "bool" else str
    for i, v in enumerate(values):
        if type(v) is not wanted:
            return i
    return None


def _described(kind: str) -> str:
    if kind in FLOATS:
        return "numbers or null"
    if kind in INTEGERS:
        low, high = INTEGERS[kind]
        return f"integers from {low} to {high}"
    return "true or false" if kind == "bool" else "strings"


def _shown(value: Any) -> str:
    if isinstance(value, list):  # never written out: it may be huge or nested deep
        return "an array"
    if isinstance(value, dict):
        return "an object"
    text = json.dumps(value[:40] if isinstance(value, str) else value)
    return text if len(text) <= 40 else text[:37] + "..."


# --- answers ---------------------------------------------------------------------------------


def check_output(schema: ModelSchema, outputs: Any, rows: int) -> dict[str, Any]:
    """A container's ``outputs``: the output columns and nothing else, each ``rows`` long,
    each value of the column's type (``AgentProtocolError`` otherwise: never trusted)."""
    frame = outputs.get(OUTPUT) if isinstance(outputs, dict) else None
    if not isinstance(frame, dict):
        raise AgentProtocolError("the scoring container sent no output data frame")
    checked: dict[str, list[Any]] = {}
    for column, kind in schema.output_columns():
        values = frame.get(column)
        if (
            not isinstance(values, list)
            or len(values) != rows
            or _first_mistyped(values, kind) is not None
        ):
            raise AgentProtocolError(f"the scoring container sent a malformed column {column!r}")
        checked[column] = values
    return {OUTPUT: checked}


def rows_of(inputs: dict[str, Any]) -> int:
    """How many rows a checked ``inputData`` has."""
    frame = inputs.get(INPUT) or {}
    return len(next(iter(frame.values()))) if frame else 0


# --- the per-service swagger ----------------------------------------------------------------

_ITEMS: dict[str, dict[str, Any]] = {
    "float": {"type": "number", "format": "float"},
    "double": {"type": "number", "format": "double"},
    "bool": {"type": "boolean"},
    "string": {"type": "string"},
}


def frame_schema(columns: list[tuple[str, str]], *, outputs: bool) -> dict[str, Any]:
    """The Swagger schema of a data frame with ``columns``: an object of typed arrays."""
    properties: dict[str, Any] = {}
    for column, kind in columns:
        items = dict(_ITEMS.get(kind) or {"type": "integer", "format": _int_format(kind)})
        if kind in FLOATS:
            items["x-nullable"] = True
        properties[column] = {"type": "array", "items": items}
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if not outputs:
        schema["required"] = [c for c, _ in columns]
    return schema


def _int_format(kind: str) -> str:
    return "int64" if kind in ("int64", "uint32", "uint64") else "int32"
