"""Realtime services' helpers: the models the tests publish (made here, with scikit-learn,
skl2onnx and onnx, as a publisher would) and the multipart form that publishes them."""

from __future__ import annotations

import functools
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from aiohttp import FormData
from aiohttp.test_utils import TestClient

#: the iris features, named as scikit-learn names them
FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
#: a classifier's outputs once converted (no ZipMap): the label, one probability per class
OUTPUTS = ["label", "probabilities_0", "probabilities_1", "probabilities_2"]


@functools.cache
def iris() -> tuple[pd.DataFrame, np.ndarray]:
    from sklearn.datasets import load_iris

    frame, target = load_iris(return_X_y=True, as_frame=True)
    return frame, target.to_numpy()


def logistic(c: float = 1.0) -> Any:
    """A logistic regression fit on iris as a data frame (it keeps the feature names)."""
    from sklearn.linear_model import LogisticRegression

    frame, target = iris()
    return LogisticRegression(C=c, max_iter=1000).fit(frame, target)


@functools.cache
def pickled_logistic(c: float = 1.0) -> bytes:
    return pickle.dumps(logistic(c))


@functools.cache
def array_logistic() -> Any:
    """The same model fit on a plain array (no feature names)."""
    from sklearn.linear_model import LogisticRegression

    frame, target = iris()
    return LogisticRegression(max_iter=1000).fit(frame.to_numpy(), target)


@functools.cache
def onnx_logistic() -> bytes:
    """``array_logistic`` converted by the publisher: its input is ``X`` (columns
    ``X_0``...), its probabilities a tensor (zipmap off)."""
    from skl2onnx import to_onnx

    frame, _ = iris()
    model = array_logistic()
    sample = frame.to_numpy()[:1].astype(np.float32)
    onnx = to_onnx(model, sample, options={id(model): {"zipmap": False}})
    data: bytes = onnx.SerializeToString()
    return data


def frame_body(frame: pd.DataFrame, columns: list[str] | None = None) -> dict[str, Any]:
    """A consume request's body: ``inputData`` as an object of columns."""
    names = columns or [str(c) for c in frame.columns]
    values = frame.to_numpy()
    return {"inputData": {n: values[:, j].tolist() for j, n in enumerate(names)}}


def form(
    model: bytes | None,
    description: str | None = None,
    operation_id: str | None = None,
) -> FormData:
    """The form ``POST|PATCH /realtime-services`` takes, as Microsoft's SDK sends it."""
    data = FormData(default_to_multipart=True)  # as a browser sends any form with a file input
    if model is not None:
        data.add_field("model", model, filename="model", content_type="application/octet-stream")
    if description is not None:
        data.add_field("description", description)
    if operation_id is not None:
        data.add_field("operationId", operation_id)
    return data


async def publish_model(
    client: TestClient[Any, Any],
    headers: dict[str, str],
    name: str,
    version: str | None,
    model: bytes | None,
    *,
    expect: int | None = None,
    patch: bool = False,
    **fields: str,
) -> Any:
    """Publish (or with ``patch``, change) a realtime service; its JSON answer (``expect``:
    the status, else 201, or 200 for a patch)."""
    path = f"/realtime-services/{name}" + (f"/{version}" if version else "")
    send = client.patch if patch else client.post
    resp = await send(
        path,
        data=form(model, fields.get("description"), fields.get("operationId")),
        headers=headers,
    )
    assert resp.status == (expect or (200 if patch else 201)), await resp.text()
    return await resp.json()


async def running(client: TestClient[Any, Any]) -> set[str]:
    """The keys of the service containers that run (whichever engine the app has)."""
    from controller.runtime.sandboxes import SANDBOXES

    runtime = client.app[SANDBOXES].runtime
    keys = set()
    for handle in await runtime.list_owned():
        if handle.kind == "service" and await runtime.poll(handle) is None:
            keys.add(handle.key)
    return keys


def leftovers(settings: Any) -> dict[str, list[str]]:
    """What a publication leaves on disk: models kept in the shared directory, and files
    still in the spool."""
    shared: Path = settings.shared_dir / "services"
    spool: Path = settings.data_dir / "spool"
    return {
        "models": sorted(p.name for p in shared.glob("*.onnx")) if shared.is_dir() else [],
        "spool": sorted(p.name for p in spool.iterdir()) if spool.is_dir() else [],
    }


def onnx_graph(
    *,
    shape: tuple[int | str | None, ...] = ("N", 2),
    domain: str = "",
    external: bool = False,
    reshape: bool = False,
) -> bytes:
    """A small ONNX model, ``Y = X + W`` (or with ``reshape``, ``Y = reshape(X, [3, 2])``,
    which onnxruntime fails on any other number of rows): ``shape`` is its input's and
    output's, ``domain`` its node's operator domain, ``external`` puts ``W``'s data in a
    file next to the model."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, list(shape))
    if reshape:
        initializer = helper.make_tensor("W", TensorProto.INT64, [2], [3, 2])
        node = helper.make_node("Reshape", ["X", "W"], ["Y"])
    else:
        initializer = helper.make_tensor("W", TensorProto.FLOAT, [2], [1.0, 2.0])
        node = helper.make_node("Add", ["X", "W"], ["Y"], domain=domain)
    if external:
        del initializer.float_data[:]
        initializer.data_location = TensorProto.EXTERNAL
        entry = initializer.external_data.add()
        entry.key, entry.value = "location", "weights.bin"
    graph = helper.make_graph([node], "g", [x], [y], [initializer])
    opsets = [helper.make_opsetid("", 17)]
    if domain:
        opsets.append(helper.make_opsetid(domain, 1))
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8  # what onnxruntime reads, whichever onnx made it
    data: bytes = model.SerializeToString()
    return data


def onnx_typed() -> bytes:
    """A model of four inputs, one of each kind of column, that gives them back: ``a``
    (int64), ``s`` (string), ``b`` (bool, negated) and ``x`` (double, two columns named
    ``left`` and ``right`` by the model's metadata)."""
    from onnx import TensorProto, helper

    def tensor(name: str, kind: int, shape: list[Any]) -> Any:
        return helper.make_tensor_value_info(name, kind, shape)

    inputs = [
        tensor("a", TensorProto.INT64, ["N"]),
        tensor("s", TensorProto.STRING, ["N"]),
        tensor("b", TensorProto.BOOL, ["N"]),
        tensor("x", TensorProto.DOUBLE, ["N", 2]),
    ]
    outputs = [
        tensor("a2", TensorProto.INT64, ["N"]),
        tensor("s2", TensorProto.STRING, ["N"]),
        tensor("b2", TensorProto.BOOL, ["N"]),
        tensor("x2", TensorProto.DOUBLE, ["N", 2]),
    ]
    nodes = [
        helper.make_node("Identity", ["a"], ["a2"]),
        helper.make_node("Identity", ["s"], ["s2"]),
        helper.make_node("Not", ["b"], ["b2"]),
        helper.make_node("Identity", ["x"], ["x2"]),
    ]
    graph = helper.make_graph(nodes, "typed", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(
        model, {"o16n.columns.x": '["left", "right"]', "o16n.columns.x2": '["l2", "r2"]'}
    )
    data: bytes = model.SerializeToString()
    return data
