"""Values in and out of JSON (API.md §6.4).

Outputs: numpy arrays and scalars, pandas frames (column-oriented) and series, tuples and
sets, dates, are turned into plain JSON; NaN and ±Inf become ``null``, integers beyond 64
bits floats. Whatever else an output is, or whatever its own methods raise, is an
:class:`EncodeError` naming why, never an error of the agent's (user code hands over
anything; ``test_agent_robustness`` fuzzes this). Inputs of a web service are decoded by
their declared ``ParameterDefinition`` type. numpy and pandas are imported only when a value
needs them, so a bare ``ping`` costs nothing.
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


#: Deepest nesting of an output value.
MAX_DEPTH = 100
#: Most containers and scalars one output may hold: a value shared many times over (``a =
#: [a, a]``, a hundred times) would otherwise take for ever to copy.
MAX_ITEMS = 10_000_000
#: Integers JSON carries exactly (the controller reads larger ones as floats).
INT_MIN, INT_MAX = -(1 << 63), (1 << 64) - 1
#: Longest exception message shown when an output's conversion fails.
MESSAGE_MAX = 2000


def _type_name(value: Any) -> str:
    cls = type(value)
    module = cls.__module__
    name = cls.__qualname__
    return name if module == "builtins" or not isinstance(module, str) else f"{module}.{name}"


_TYPE_NAME: Any = vars(type)["__name__"]


def describe(exc: BaseException, limit: int = MESSAGE_MAX) -> str:
    """``Type: message`` of an exception raised by user code, whatever its ``__str__`` does
    (raises, returns a non-string, returns megabytes)."""
    # type's own descriptor: a metaclass of user code may make ``__name__`` raise
    name = _TYPE_NAME.__get__(type(exc))
    try:
        text = str.__str__(str(exc))  # a str subclass could override __format__
    except BaseException:  # user code: SystemExit and all
        text = "<the exception's message cannot be shown>"
    if len(text) > limit:
        text = text[:limit] + f"... [{len(text) - limit} more characters]"
    return f"{name}: {text}" if text else name


def clean_text(text: str) -> str:
    """``text`` as valid UTF-8: lone surrogates (``print('\\ud800')``, a file name that is
    not UTF-8) are written as escapes instead of breaking the reply."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def to_json(value: Any) -> Any:
    """A JSON-ready copy of ``value`` made of exact ``dict``/``list``/``str``/``int``/
    ``float``/``bool``/``None``; raises :class:`EncodeError` when there is none.

    User code may hand over anything, so whatever the value's own methods raise (even
    ``SystemExit``) becomes an :class:`EncodeError` naming it, and circular or enormous
    values are refused rather than followed."""
    encoder = _Encoder()
    try:
        return encoder.encode(value, 0)
    except EncodeError:
        raise
    except RecursionError:
        raise EncodeError("value is nested too deeply") from None
    except BaseException as exc:  # user code (``__iter__``, ``tolist``...)
        raise EncodeError(f"converting it raised {describe(exc)}") from None


class _Encoder:
    """One conversion. Counts the items it writes (a shared container counts each time it
    appears, as it would be written) and converts each container once: ``a = [a, a]``, a
    hundred times over, is refused at once instead of walked for ever."""

    def __init__(self) -> None:
        self.items = 0
        self.path: set[int] = set()  # containers being converted: a cycle comes back to one
        #: id → (container, its copy, items in it, its height); the container is kept so
        #: that its id is not reused
        self.done: dict[int, tuple[Any, Any, int, int]] = {}
        self.deepest = 0  # the deepest level reached so far

    def count(self, items: int) -> None:
        self.items += items
        self.room(0)

    def room(self, items: int) -> None:
        """Refuse now when ``items`` more would be too many (before copying an array)."""
        if self.items + items > MAX_ITEMS:
            raise EncodeError(f"value holds more than {MAX_ITEMS:,} items")

    def encode(self, value: Any, depth: int) -> Any:
        self.count(1)
        if depth > MAX_DEPTH:
            raise EncodeError("value is nested too deeply")
        self.deepest = max(self.deepest, depth)
        if value is None or value is True or value is False:
            return value
        if isinstance(value, str):
            return clean_text(str.__str__(value))
        if isinstance(value, int):
            return _int(int.__int__(value))
        if isinstance(value, float):
            number = float.__float__(value)
            return number if math.isfinite(number) else None
        if isinstance(value, dict | list | tuple | set | frozenset):
            return self._container(value, depth)
        if isinstance(value, datetime.datetime | datetime.date | datetime.time):
            return self.encode(value.isoformat(), depth + 1)
        if isinstance(value, decimal.Decimal):
            return _float(value)
        if isinstance(value, complex):
            raise EncodeError("complex numbers have no JSON form")
        pandas = sys.modules.get("pandas")
        if pandas is not None:
            if isinstance(value, pandas.DataFrame | pandas.Series | pandas.Index):
                self.room(int(value.size))  # before tolist() copies it
            if isinstance(value, pandas.DataFrame):
                if not value.columns.is_unique:  # one JSON key per column: one would be lost
                    duplicated = sorted({str(c) for c in value.columns[value.columns.duplicated()]})
                    raise EncodeError(f"a DataFrame with duplicate column names {duplicated}")
                return self._guarded(
                    value,
                    depth,
                    lambda: {
                        _key(col): self.encode(data.tolist(), depth + 1)
                        for col, data in value.items()
                    },
                )
            if isinstance(value, pandas.Series | pandas.Index):
                return self.encode(value.tolist(), depth + 1)
            if isinstance(value, pandas.Timestamp):
                return self.encode(value.isoformat(), depth + 1)
            if value is pandas.NaT or value is getattr(pandas, "NA", object()):
                return None
        numpy = sys.modules.get("numpy")
        if numpy is not None:
            if isinstance(value, numpy.ndarray):
                self.room(int(value.size))  # before tolist() copies it
                return self.encode(value.tolist(), depth + 1)
            if isinstance(value, numpy.floating):
                return _float(value)
            if isinstance(value, numpy.complexfloating):
                raise EncodeError("complex numbers have no JSON form")
            if isinstance(value, numpy.generic):
                item = value.item()
                if isinstance(item, numpy.generic):  # no Python equivalent (numpy.void...)
                    raise EncodeError(f"a value of type {_type_name(value)} has no JSON form")
                return self.encode(item, depth + 1)
        raise EncodeError(f"a value of type {_type_name(value)} has no JSON form")

    def _container(self, value: Any, depth: int) -> Any:
        # The stored items: no overridden __iter__ or items() of a subclass runs.
        if isinstance(value, dict):
            return self._guarded(
                value,
                depth,
                lambda: {_key(k): self.encode(v, depth + 1) for k, v in dict.items(value)},
            )
        if isinstance(value, list):
            items: Any = list.copy(value)
        elif isinstance(value, tuple):
            items = tuple.__iter__(value)
        elif isinstance(value, set):
            items = set.__iter__(value)
        else:
            items = frozenset.__iter__(value)
        return self._guarded(value, depth, lambda: self._sequence(items, depth))

    def _sequence(self, items: Any, depth: int) -> list[Any]:
        """The items as a list; plain numbers and strings without a call each (a column of
        a million floats is common)."""
        out: list[Any] = []
        append = out.append
        plain = 0
        for item in items:
            kind = type(item)
            if kind is float:
                append(item if math.isfinite(item) else None)
            elif (
                (kind is int and INT_MIN <= item <= INT_MAX)
                or (kind is str and item.isascii())
                or item is None
                or kind is bool
            ):
                append(item)
            else:
                append(self.encode(item, depth + 1))
                continue
            plain += 1
            if plain >= 65536:
                self.count(plain)
                plain = 0
        self.count(plain)
        return out

    def _guarded(self, value: Any, depth: int, convert: Any) -> Any:
        """``convert()`` once per container; refused for one that contains itself."""
        ident = id(value)
        done = self.done.get(ident)
        if done is not None:
            _, copy, items, height = done
            if depth + height > MAX_DEPTH:
                raise EncodeError("value is nested too deeply")
            self.count(items)
            self.deepest = max(self.deepest, depth + height)
            return copy
        if ident in self.path:
            raise EncodeError(f"a {_type_name(value)} that contains itself has no JSON form")
        self.path.add(ident)
        start, outer = self.items, self.deepest
        self.deepest = depth
        try:
            result = convert()
        finally:
            self.path.discard(ident)
        self.done[ident] = (value, result, self.items - start, self.deepest - depth)
        self.deepest = max(outer, self.deepest)
        return result


def _int(number: int) -> int | float:
    """Integers beyond 64 bits travel as floats (as the controller would read them anyway);
    one too large for a float has no JSON form. Measured in bits: turning a huge int into
    digits is what Python refuses (``sys.set_int_max_str_digits``)."""
    if INT_MIN <= number <= INT_MAX:
        return number
    try:
        return float(number)
    except OverflowError:
        digits = int(number.bit_length() * 0.30103) + 1
        raise EncodeError(f"an integer of about {digits:,} digits is too large for JSON") from None


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _key(key: Any) -> str:
    if isinstance(key, str):
        return clean_text(str.__str__(key))
    if key is None or key is True or key is False:
        return str(key)
    if isinstance(key, int):
        number = int.__int__(key)
        if number.bit_length() > 14_000:  # str() refuses beyond 4,300 digits
            raise EncodeError("a mapping key that is an integer of over 4,000 digits")
        return str(number)
    if isinstance(key, float):
        return float.__repr__(float.__float__(key))
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(key, numpy.generic):
        item = key.item()
        if not isinstance(item, numpy.generic):
            return _key(item)
    raise EncodeError(f"a mapping key of type {_type_name(key)} has no JSON form")


def encoded_size(value: Any) -> int:
    """Bytes of ``value`` (from :func:`to_json`) as JSON on the wire."""
    from o16n_agent import protocol

    return len(protocol.dumps(value))


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
    try:
        return _convert(value, kind)
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a number beyond a float
        raise DecodeError(f"cannot be converted: {type(exc).__name__}: {exc}"[:500]) from None


def _convert(value: Any, kind: str) -> Any:
    if kind == "numeric":
        return float(value)
    if kind == "integer":
        return int(value)
    if kind in ("logical", "character"):
        return value
    if kind == "vector":
        import numpy

        return numpy.array(value)
    if kind == "matrix":
        import numpy

        return numpy.asmatrix(numpy.array(value))
    import pandas

    return pandas.DataFrame(value)


def encode_outputs(
    values: list[tuple[str, Any]], budget: int, label: str = "output"
) -> tuple[list[Any], str]:
    """Each ``(name, value)`` as JSON, and ``""``; or ``[]`` and why not: the first output
    that has no JSON form, or that together they would take more than ``budget`` bytes of
    the reply."""
    encoded: list[Any] = []
    sizes: dict[str, int] = {}
    for name, value in values:
        try:
            data = to_json(value)
            sizes[name] = encoded_size(data)
        except EncodeError as exc:
            return [], f"{label} '{name}' cannot be returned as JSON: {exc}"
        except Exception as exc:  # the JSON writer refusing what to_json let through
            return [], f"{label} '{name}' cannot be returned as JSON: {describe(exc)}"
        encoded.append(data)
    total = sum(sizes.values())
    if total > budget:
        largest = max(sizes, key=lambda n: sizes[n])
        return [], (
            f"the outputs take {total:,} bytes as JSON, more than the {max(budget, 0):,} a "
            f"reply may carry ({label} '{largest}' takes {sizes[largest]:,})"
        )
    return encoded, ""
