"""Values in and out of JSON (API.md §6.4).

Outputs: numpy arrays and scalars, pandas frames (column-oriented) and series, tuples and
sets, dates, are turned into plain JSON; NaN and ±Inf become ``null``. Inputs of a web
service are decoded by their declared ``ParameterDefinition`` type. numpy and pandas are
imported only when a value needs them, so a bare ``ping`` costs nothing.
"""

from __future__ import annotations

import datetime
import decimal
import math
import sys
from typing import Any

TYPES = ("numeric", "integer", "logical", "character", "vector", "matrix", "data.frame")


class EncodeError(Exception):
    """A value that has no JSON form; the message names its type."""


def _type_name(value: Any) -> str:
    cls = type(value)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def to_json(value: Any, _depth: int = 0) -> Any:
    """A JSON-ready copy of ``value``; raises :class:`EncodeError` when there is none."""
    if _depth > 100:
        raise EncodeError("value is nested too deeply")
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_key(k): to_json(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json(v, _depth + 1) for v in value]
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return to_json(float(value))
    if isinstance(value, complex):
        raise EncodeError("complex numbers have no JSON form")
    pandas = sys.modules.get("pandas")
    if pandas is not None:
        if isinstance(value, pandas.DataFrame):
            if not value.columns.is_unique:  # one JSON key per column: a duplicate would be lost
                duplicated = sorted({str(c) for c in value.columns[value.columns.duplicated()]})
                raise EncodeError(f"a DataFrame with duplicate column names {duplicated}")
            return {_key(col): to_json(data.tolist(), _depth + 1) for col, data in value.items()}
        if isinstance(value, pandas.Series | pandas.Index):
            return to_json(value.tolist(), _depth + 1)
        if isinstance(value, pandas.Timestamp):
            return value.isoformat()
        if value is pandas.NaT or value is getattr(pandas, "NA", object()):
            return None
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        if isinstance(value, numpy.ndarray):
            return to_json(value.tolist(), _depth + 1)
        if isinstance(value, numpy.generic):
            return to_json(value.item(), _depth + 1)
    raise EncodeError(f"a value of type {_type_name(value)} has no JSON form")


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool | int | float):
        return str(key)
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(key, numpy.generic):
        return str(key.item())
    raise EncodeError(f"a mapping key of type {_type_name(key)} has no JSON form")


class DecodeError(Exception):
    """An input value that does not fit its declared type; the message says how."""


#: ML types of API.md §5.2, plus the spellings clients use for them (the seed says "string").
ALIASES = {
    "numeric": "numeric", "number": "numeric", "float": "numeric", "double": "numeric",
    "integer": "integer", "int": "integer",
    "logical": "logical", "bool": "logical", "boolean": "logical",
    "character": "character", "string": "character", "str": "character",
    "vector": "vector", "list": "vector", "array": "vector",
    "matrix": "matrix",
    "data.frame": "data.frame", "dataframe": "data.frame",
}  # fmt: skip


def canonical_type(kind: str) -> str | None:
    """The ML type a ``ParameterDefinition.type`` names, or ``None`` if it names none."""
    return ALIASES.get(kind.strip().lower())


def check_input(value: Any, kind: str) -> None:
    """Check the JSON shape of an input against its ML type (stdlib only: the controller
    runs this before a request reaches a container)."""
    kind = canonical_type(kind) or kind
    if kind == "numeric":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DecodeError("expected a number")
    elif kind == "integer":
        integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        if isinstance(value, bool) or not integral:
            raise DecodeError("expected an integer")
    elif kind == "logical":
        if not isinstance(value, bool):
            raise DecodeError("expected true or false")
    elif kind == "character":
        if not isinstance(value, str):
            raise DecodeError("expected a string")
    elif kind == "vector":
        if not isinstance(value, list):
            raise DecodeError("expected an array")
    elif kind == "matrix":
        if not isinstance(value, list) or not all(isinstance(row, list) for row in value):
            raise DecodeError("expected an array of row arrays")
        if len({len(row) for row in value}) > 1:
            raise DecodeError("the matrix rows differ in length")
    elif kind == "data.frame":
        if isinstance(value, dict):
            if not all(isinstance(v, list) for v in value.values()):
                raise DecodeError("expected an object of columns, each an array of values")
            if len({len(v) for v in value.values()}) > 1:
                lengths = ", ".join(f"{k}={len(v)}" for k, v in value.items())
                raise DecodeError(f"the data.frame columns differ in length ({lengths})")
        elif not (isinstance(value, list) and all(isinstance(r, dict) for r in value)):
            raise DecodeError("expected an object of columns ({column: [values]})")
    else:
        raise DecodeError(f"unknown parameter type {kind!r}")


def from_json(value: Any, kind: str) -> Any:
    """Decode a consumed web-service input by its ``ParameterDefinition`` type."""
    check_input(value, kind)
    kind = canonical_type(kind) or kind
    if kind == "numeric":
        return float(value)
    if kind == "integer":
        return int(value)
    if kind in ("logical", "character"):
        return value
    if kind == "vector":
        import numpy

        try:
            return numpy.array(value)
        except ValueError as exc:
            raise DecodeError(f"not a vector: {exc}") from None
    if kind == "matrix":
        import numpy

        try:
            return numpy.asmatrix(numpy.array(value))
        except ValueError as exc:
            raise DecodeError(f"not a matrix: {exc}") from None
    import pandas

    return pandas.DataFrame(value)
