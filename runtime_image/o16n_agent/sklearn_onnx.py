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
    model = _to_onnx(estimator, width)
    _name_columns(model, estimator)
    return model


def _to_onnx(estimator: Any, width: int) -> Any:
    import numpy
    from skl2onnx import to_onnx
    from sklearn.base import is_classifier

    name = type(estimator).__name__
    final = _final_step(estimator)
    sample = numpy.zeros((1, width), dtype=numpy.float32)
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
    """Column names from the estimator: its features' and, for a classifier, its classes'."""
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None:
        _set_columns(model, INPUT, [str(n) for n in names])
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
