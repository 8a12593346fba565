"""A pickled scikit-learn estimator or pipeline, converted to ONNX (skl2onnx).

Unpickling runs whatever the pickle says, so this runs only in a single-use container
(``model_prepare``), never where services are scored. The model takes one float input
``X`` of ``n_features_in_`` columns, named after ``feature_names_in_`` when it has them;
a classifier gives ``label`` and ``probabilities`` (no ZipMap), one column per class.
"""

from __future__ import annotations

import io
import json
import warnings
from typing import Any

from o16n_agent.onnx_model import COLUMN_NAME_MAX, COLUMNS_KEY, ModelRefused

#: how pickles and joblib's compressed files begin (joblib's zlib, gzip, bz2, lzma, xz, lz4)
PREFIXES = (b"\x80", b"x", b"\x1f\x8b", b"BZ", b"]\x00", b"\xfd7zXZ", b'\x04"M\x18')
INPUT = "X"


def is_pickle(data: bytes) -> bool:
    """Whether ``data`` is for joblib (an ONNX model begins with another byte: 0x08)."""
    return data.startswith(PREFIXES)


def convert(data: bytes) -> Any:
    """The ``ModelProto`` of the estimator pickled in ``data``; ``ModelRefused`` says why not."""
    with warnings.catch_warnings():  # of versions and deprecations: the container's log
        warnings.simplefilter("ignore")
        return _convert(data)


def _convert(data: bytes) -> Any:
    import joblib
    from sklearn.base import BaseEstimator

    try:
        estimator = joblib.load(io.BytesIO(data))
    except Exception as exc:
        raise ModelRefused(f"the pickle cannot be loaded: {_text(exc)}") from None
    name = type(estimator).__name__
    if not isinstance(estimator, BaseEstimator):
        raise ModelRefused(f"the pickle holds a {name}, not a scikit-learn estimator or pipeline")
    width = getattr(estimator, "n_features_in_", None)
    if not isinstance(width, int) or width <= 0:
        raise ModelRefused(
            f"cannot convert {name}: it does not say how many features it takes "
            "(n_features_in_: is it fitted?)"
        )
    names = getattr(estimator, "feature_names_in_", None)
    try:
        model = _to_onnx(estimator, width)
    except ModelRefused as refused:
        if names is None:
            raise
        # A ColumnTransformer picks its columns by name: one input per column, then
        try:
            model = _to_onnx(estimator, width, [str(n) for n in names])
        except ModelRefused:
            raise refused from None  # the reason of the usual conversion
        _name_inputs(model, [str(n) for n in names])
    else:
        _name_columns(model, estimator)
    _name_classes(model, estimator)
    _bool_labels(model, estimator)
    return model


def _to_onnx(estimator: Any, width: int, names: list[str] | None = None) -> Any:
    """Converted with one float input ``X`` ``[rows, width]``, or with ``names`` one
    float input per named column (a pandas sample, as skl2onnx takes it)."""
    import numpy
    from skl2onnx import to_onnx
    from sklearn.base import is_classifier

    name = type(estimator).__name__
    final = _final_step(estimator)
    sample: Any = numpy.zeros((1, width), dtype=numpy.float32)
    if names is not None:
        import pandas

        sample = pandas.DataFrame(sample, columns=names)
    options = {id(final): {"zipmap": False}} if is_classifier(final) else None
    try:
        try:
            return to_onnx(estimator, sample, options=options)
        except NameError:  # a converter without the option: its ZipMap is removed later
            if options is None:
                raise
            return to_onnx(estimator, sample)
    except Exception as exc:
        raise ModelRefused(f"cannot convert {name} to ONNX: {_text(exc)}") from None


def _final_step(estimator: Any) -> Any:
    """The estimator that makes a pipeline's outputs (the options name it)."""
    while hasattr(estimator, "steps") and estimator.steps:
        estimator = estimator.steps[-1][1]
    return estimator


def _name_columns(model: Any, estimator: Any) -> None:
    """The input's columns named as the estimator's features."""
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None:
        _set_columns(model, INPUT, [str(n) for n in names])


def _name_inputs(model: Any, names: list[str]) -> None:
    """Each one-column input (skl2onnx made its name an identifier) named as its feature."""
    inputs = [v.name for v in model.graph.input]
    if len(inputs) == len(names):
        for tensor, column in zip(inputs, names, strict=True):
            _set_columns(model, tensor, [column])


def _bool_labels(model: Any, estimator: Any) -> None:
    """Labels of a classifier of ``True``/``False`` as booleans: skl2onnx makes them
    int64 (0 and 1), which the answer's columns would show."""
    import onnx

    classes = getattr(_final_step(estimator), "classes_", None)
    if getattr(getattr(classes, "dtype", None), "kind", "") != "b":
        return
    graph = model.graph
    output = next((v for v in graph.output if v.name == "label"), None)
    if output is None:
        return
    inner = "label_int64"
    for node in graph.node:
        node.output[:] = [inner if o == "label" else o for o in node.output]
        node.input[:] = [inner if i == "label" else i for i in node.input]
    graph.node.append(onnx.helper.make_node("Cast", [inner], ["label"], to=onnx.TensorProto.BOOL))
    output.type.tensor_type.elem_type = onnx.TensorProto.BOOL


def _name_classes(model: Any, estimator: Any) -> None:
    """A classifier's probability columns named as its classes."""
    classes = getattr(_final_step(estimator), "classes_", None)
    widths = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.output
    }
    if classes is not None and widths.get("probabilities", [])[1:] == [len(classes)]:
        _set_columns(model, "probabilities", [f"probabilities_{c}" for c in classes])


def _set_columns(model: Any, tensor: str, columns: list[str]) -> None:
    """Name ``tensor``'s columns, when the names are usable (else they stay ``X_0``...)."""
    usable = len(set(columns)) == len(columns) and all(
        1 <= len(c) <= COLUMN_NAME_MAX for c in columns
    )
    if not usable:
        return
    key = COLUMNS_KEY + tensor
    for entry in model.metadata_props:
        if entry.key == key:
            entry.value = json.dumps(columns)
            return
    entry = model.metadata_props.add()
    entry.key, entry.value = key, json.dumps(columns)


def _text(exc: BaseException) -> str:
    """An exception's first line (skl2onnx explains at length after it)."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:2000]
