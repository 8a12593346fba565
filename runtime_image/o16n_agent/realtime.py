"""The operations of a realtime service: an ONNX model scored by onnxruntime, no user code.

``model_prepare`` runs in a single-use container at publication: it turns the uploaded
model (ONNX, or a pickled scikit-learn estimator, converted) into checked ONNX bytes and
its SCHEMA (``onnx_model``). ``realtime_init`` warms a service container: the model is
checked again (the container trusts no stored file) and loaded into an onnxruntime
session. ``score`` turns a data frame's columns into the model's input tensors and its
output tensors back into columns, replying as a Python service's ``run`` does. onnx,
onnxruntime and numpy are imported when first used: sessions never pay for them.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

from o16n_agent import onnx_model, sklearn_onnx
from o16n_agent.errors import OpError
from o16n_agent.onnx_model import ModelRefused

Reply = tuple[dict[str, Any], bytes | None]
#: the numpy dtype of each SCHEMA type (``string``: Python strings, as onnxruntime takes them)
DTYPES = {
    "float": "float32",
    "double": "float64",
    "int8": "int8",
    "int16": "int16",
    "int32": "int32",
    "int64": "int64",
    "uint8": "uint8",
    "uint16": "uint16",
    "uint32": "uint32",
    "uint64": "uint64",
    "bool": "bool",
    "string": "object",
}
INTERRUPTED = "KeyboardInterrupt: the request was interrupted"


class RealtimeOps:
    def __init__(self, on_state: Callable[[bool], None]) -> None:
        self._on_state = on_state
        self.session: Any = None
        self.init_error = ""
        #: SCHEMA's inputs and outputs: (tensor name, type, columns)
        self.inputs: list[tuple[str, str, list[str]]] = []
        self.outputs: list[tuple[str, str, list[str]]] = []
        #: each input's rank: ``[rows]`` (1) or ``[rows, k]`` (2)
        self.ranks: dict[str, int] = {}

    def handlers(self) -> dict[str, Callable[[dict[str, Any], bytes | None], Reply]]:
        return {"model_prepare": self.prepare, "realtime_init": self.init, "score": self.score}

    def shrinkers(self) -> dict[str, Callable[[dict[str, Any], int, int], dict[str, Any]]]:
        """The operations whose answer too large to send is a result of its own."""
        return {"score": self.oversized}

    # --- publication ----------------------------------------------------------------------

    def prepare(self, message: dict[str, Any], blob: bytes | None) -> Reply:
        """The uploaded model as ONNX bytes (the reply's blob) and its SCHEMA; a refusal is
        an ``invalid`` error saying why, a result over ``blob_limit`` a ``too_large`` one."""
        if not blob:
            raise ModelRefused("the model is empty")
        data = bytes(blob)
        try:
            if sklearn_onnx.is_pickle(data):
                model, changed = sklearn_onnx.convert(data), True
            else:
                model, changed = onnx_model.parse(data), False
            changed = onnx_model.remove_zipmap(model) or changed
            schema = onnx_model.validate(model)
        except OpError:
            raise
        except Exception as exc:  # a crafted graph the checks trip over: still a refusal
            raise ModelRefused(f"the model cannot be read: {_text(exc)}") from None
        if changed:
            data = model.SerializeToString()
        del model
        limit = message.get("blob_limit")
        if isinstance(limit, int) and not isinstance(limit, bool) and len(data) > limit:
            raise OpError(
                f"the ONNX model takes {len(data):,} bytes, more than the {limit:,} allowed",
                "too_large",
            )
        try:
            session(data)
        except Exception as exc:
            raise ModelRefused(f"onnxruntime cannot load the model: {_text(exc)}") from None
        return {"schema": schema}, data

    # --- warm-up --------------------------------------------------------------------------

    def init(self, message: dict[str, Any], blob: bytes | None) -> Reply:
        """Load the published model; what keeps it from serving is ``init_error``, which
        every ``score`` then answers with."""
        self.session, self.init_error = None, ""
        try:
            if not blob:
                raise ModelRefused("no model came with realtime_init")
            model = onnx_model.parse(blob)
            schema = onnx_model.validate(model)
            ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in model.graph.input}
            del model
            if message.get("schema") != schema:
                raise ModelRefused("the model's columns are not the ones published (SCHEMA)")
            self.session = session(blob)
        except OpError as exc:
            self.init_error = str(exc)
        except Exception as exc:  # onnxruntime's, chiefly
            self.init_error = f"onnxruntime cannot load the model: {_text(exc)}"
        else:
            self.inputs = [(t["name"], t["type"], t["columns"]) for t in schema["inputs"]]
            self.outputs = [(t["name"], t["type"], t["columns"]) for t in schema["outputs"]]
            self.ranks = ranks
        # The libraries' objects live as long as the container: out of the collector's
        # sight, as a Python service's warm-up leaves them.
        gc.collect()
        gc.freeze()
        return ({"init_error": self.init_error} if self.init_error else {}), None

    # --- requests -------------------------------------------------------------------------

    def score(self, message: dict[str, Any], blob: bytes | None) -> Reply:
        """Score ``inputs.inputData``'s rows. The controller checked the columns; one that
        still does not fit its tensor is ``invalid``. Whatever onnxruntime raises is the
        request's error (``success: false``)."""
        if self.session is None:
            return _result(False, self.init_error or "realtime_init has not run"), None
        inputs = message.get("inputs")
        frame = inputs.get("inputData") if isinstance(inputs, dict) else None
        if not isinstance(frame, dict):
            raise OpError("'inputs' must be an object with the object 'inputData'", "invalid")
        try:
            feeds = self._feeds(frame)
        except OpError:
            raise
        except Exception as exc:  # memory, chiefly: the request's failure, not the agent's
            return _result(False, f"the columns cannot be read: {_text(exc)}"), None
        try:
            self._on_state(True)  # an interrupt lands when onnxruntime returns
            try:
                results = self.session.run([name for name, _, _ in self.outputs], feeds)
            finally:
                self._on_state(False)
        except KeyboardInterrupt:
            return _result(False, INTERRUPTED), None
        except Exception as exc:
            return _result(False, f"onnxruntime: {_text(exc)}"), None
        try:
            columns = self._columns(results)
        except Exception as exc:
            return _result(False, f"the model's outputs cannot be read: {_text(exc)}"), None
        return _result(True, "", columns), None

    @staticmethod
    def oversized(reply: dict[str, Any], size: int, limit: int) -> dict[str, Any]:
        """What ``score`` replies when its answer ``reply``, encoded to be sent, takes
        ``size`` bytes, more than the ``limit`` a reply may: the request's failure, not the
        agent's (the agent checks the size on the encoding it sends, made once)."""
        columns = reply["outputs"]["outputData"]
        rows = len(next(iter(columns.values()), []))
        return _result(
            False,
            f"the output of {rows:,} rows takes {size:,} bytes, more than the "
            f"{limit:,} a reply may carry: score fewer rows per request",
        )

    def _feeds(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Each input tensor: its columns side by side (``[rows, k]``), or the one column
        (``[rows]``); numbers of float columns may be null (NaN)."""
        import numpy

        feeds: dict[str, Any] = {}
        rows: int | None = None
        for name, kind, columns in self.inputs:
            arrays = []
            for column in columns:
                values = frame.get(column)
                if not isinstance(values, list):
                    raise OpError(f"column {column!r} is missing or not a list", "invalid")
                if rows is None:
                    rows = len(values)
                elif len(values) != rows:
                    raise OpError(
                        f"column {column!r} has {len(values)} values, not {rows}", "invalid"
                    )
                try:
                    array = numpy.array(values, dtype=DTYPES[kind])
                except (TypeError, ValueError, OverflowError) as exc:
                    raise OpError(f"column {column!r} ({kind}): {exc}", "invalid") from None
                if array.ndim != 1:
                    raise OpError(f"column {column!r} ({kind}): values must be scalars", "invalid")
                arrays.append(array)
            feeds[name] = numpy.stack(arrays, axis=1) if self.ranks[name] == 2 else arrays[0]
        return feeds

    def _columns(self, results: list[Any]) -> dict[str, list[Any]]:
        """The output tensors as columns: a ``[rows, k]`` one split, NaN and infinities
        null, values JSON's own."""
        columns: dict[str, list[Any]] = {}
        rows: int | None = None
        for (name, _, names), value in zip(self.outputs, results, strict=True):
            shape = getattr(value, "shape", None)
            if shape is not None and len(shape) == 1 and len(names) == 1:
                parts = [value]
            elif shape is not None and len(shape) == 2 and shape[1] == len(names):
                parts = [value[:, j] for j in range(len(names))]
            else:
                raise ValueError(f"output {name!r} has the shape {shape}, not [rows, {len(names)}]")
            for column, part in zip(names, parts, strict=True):
                if rows is None:
                    rows = len(part)
                elif len(part) != rows:
                    raise ValueError(f"output {name!r} has {len(part)} rows, not {rows}")
                columns[column] = _values(part)
        return columns


def session(data: bytes) -> Any:
    """An onnxruntime session of the model in ``data`` (bytes, never a path: nothing is
    read from the working directory), on one thread: the pool runs many containers."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: warnings would go to the container's log
    return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _values(part: Any) -> list[Any]:
    """One output column as JSON values: NaN and infinities become null."""
    import numpy

    values: list[Any] = part.tolist()
    if part.dtype.kind == "f":
        bad = ~numpy.isfinite(part)
        if bad.any():
            for i in numpy.flatnonzero(bad).tolist():
                values[i] = None
    elif part.dtype.kind in "SV":
        values = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in values]
    return values


def _result(
    success: bool, error: str, columns: dict[str, list[Any]] | None = None
) -> dict[str, Any]:
    """The reply of a Python service's ``run``: only ``outputData`` (the columns) varies."""
    return {
        "success": success,
        "error": error,
        "console": "",
        "changed_files": [],
        "changed_total": 0,
        "outputs": {"outputData": columns},
        "files": {},
    }


def _text(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text or type(exc).__name__)[:10_000]
