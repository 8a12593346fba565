"""A realtime service's operations, in-process: publication (ONNX, or a scikit-learn pickle
converted), the refusals that say why, warm-up and scoring (issue 17)."""

from __future__ import annotations

import gc
import io
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnx
import pytest
from o16n_agent import agent as agent_module
from o16n_agent.agent import Agent
from o16n_agent.errors import OpError
from o16n_agent.onnx_model import ModelRefused
from o16n_agent.realtime import RealtimeOps
from onnx import TensorProto, helper
from sklearn.base import BaseEstimator
from sklearn.datasets import load_iris
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from controller.runtime import agent_link

X, Y = load_iris(return_X_y=True)
X32 = X.astype(np.float32)


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    """Fitting and conversion warn of versions and convergence, not what is tested; and
    what a warm-up froze is this test process's to collect again."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    gc.unfreeze()


def pickled(obj: Any) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(obj, buffer)
    return buffer.getvalue()


def prepare(data: bytes, **message: Any) -> tuple[dict[str, Any], bytes]:
    reply, blob = RealtimeOps(lambda running: None).prepare(
        {"op": "model_prepare", **message}, data
    )
    assert blob is not None
    return reply["schema"], blob


def served(schema: dict[str, Any], model: bytes) -> RealtimeOps:
    ops = RealtimeOps(lambda running: None)
    reply, blob = ops.init({"op": "realtime_init", "schema": schema}, model)
    assert reply == {} and blob is None
    return ops


def score(ops: RealtimeOps, frame: dict[str, list[Any]]) -> dict[str, Any]:
    reply, blob = ops.score({"op": "score", "inputs": {"inputData": frame}}, None)
    assert blob is None
    assert set(reply) == {
        "success",
        "error",
        "console",
        "changed_files",
        "changed_total",
        "outputs",
        "files",
    }
    return reply


def iris_frame(columns: list[str]) -> dict[str, list[Any]]:
    return {c: X32[:, j].tolist() for j, c in enumerate(columns)}


def refusal(data: bytes) -> str:
    with pytest.raises(ModelRefused) as caught:
        prepare(data)
    assert caught.value.code == "invalid"
    return str(caught.value)


# --- scikit-learn models: outputs equal scikit-learn's -----------------------------------

CLASSIFIERS = {
    "svc": lambda: SVC(probability=True, random_state=0),
    "logistic": lambda: LogisticRegression(max_iter=1000),
    "forest": lambda: RandomForestClassifier(n_estimators=20, random_state=0),
    "boosting": lambda: GradientBoostingClassifier(n_estimators=20, random_state=0),
    # skl2onnx passes numpy booleans where protobuf 7 wants ints: pinned to protobuf 6
    "histogram boosting": lambda: HistGradientBoostingClassifier(max_iter=20, random_state=0),
    "pipeline": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
}


@pytest.mark.parametrize("kind", sorted(CLASSIFIERS))
def test_a_classifier_scores_as_scikit_learn_does(kind: str) -> None:
    model = CLASSIFIERS[kind]().fit(X, Y)
    schema, onnx_bytes = prepare(pickled(model))
    columns = [f"X_{j}" for j in range(4)]
    assert schema == {
        "inputs": [{"name": "X", "type": "float", "columns": columns}],
        "outputs": [
            {"name": "label", "type": "int64", "columns": ["label"]},
            {
                "name": "probabilities",
                "type": "float",
                "columns": ["probabilities_0", "probabilities_1", "probabilities_2"],
            },
        ],
    }
    reply = score(served(schema, onnx_bytes), iris_frame(columns))
    assert reply["success"] and reply["error"] == ""
    out = reply["outputs"]["outputData"]
    assert out["label"] == model.predict(X32).tolist()
    expected = model.predict_proba(X32)
    for c in range(3):
        assert np.allclose(out[f"probabilities_{c}"], expected[:, c], rtol=0, atol=1e-5)
    assert all(type(v) is int for v in out["label"])
    assert all(type(v) is float for v in out["probabilities_0"])


def test_feature_and_class_names_name_the_columns() -> None:
    pandas = pytest.importorskip("pandas")
    names = ["sepal length", "sepal width", "petal length", "petal width"]
    frame = pandas.DataFrame(X, columns=names)
    labels = np.array(["setosa", "versicolor", "virginica"])[Y]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(frame, labels)
    schema, onnx_bytes = prepare(pickled(model))
    assert schema["inputs"] == [{"name": "X", "type": "float", "columns": names}]
    assert schema["outputs"] == [
        {"name": "label", "type": "string", "columns": ["label"]},
        {
            "name": "probabilities",
            "type": "float",
            "columns": [f"probabilities_{c}" for c in ("setosa", "versicolor", "virginica")],
        },
    ]
    out = score(served(schema, onnx_bytes), iris_frame(names))["outputs"]["outputData"]
    assert out["label"] == model.predict(frame.astype(np.float32)).tolist()


def test_a_column_transformer_by_name_gets_one_input_per_column() -> None:
    import pandas as pd
    from sklearn.compose import ColumnTransformer

    names = ["sepal length (cm)", "sepal width", "petal length", "petal width"]
    frame = pd.DataFrame(X, columns=names)
    model = make_pipeline(
        ColumnTransformer([("s", StandardScaler(), names[:2])], remainder="passthrough"),
        LogisticRegression(max_iter=1000),
    ).fit(frame, Y)
    schema, onnx_bytes = prepare(pickled(model))
    assert [c for t in schema["inputs"] for c in t["columns"]] == names
    out = score(served(schema, onnx_bytes), {n: X32[:, j].tolist() for j, n in enumerate(names)})
    values = out["outputs"]["outputData"]
    assert values["label"] == model.predict(frame).tolist()
    probabilities = np.array([values[f"probabilities_{c}"] for c in model.classes_]).T
    assert np.abs(probabilities - model.predict_proba(frame)).max() < 1e-5


def test_true_and_false_classes_come_back_as_booleans() -> None:
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, Y == 1)
    schema, onnx_bytes = prepare(pickled(model))
    assert schema["outputs"][0] == {"name": "label", "type": "bool", "columns": ["label"]}
    out = score(served(schema, onnx_bytes), iris_frame([f"X_{j}" for j in range(4)]))
    assert out["outputs"]["outputData"]["label"] == model.predict(X32).tolist()


def test_a_regressor_gives_one_column() -> None:
    model = LinearRegression().fit(X[:, :3], X[:, 3])
    schema, onnx_bytes = prepare(pickled(model))
    assert schema["outputs"] == [{"name": "variable", "type": "float", "columns": ["variable"]}]
    frame = {f"X_{j}": X32[:, j].tolist() for j in range(3)}
    out = score(served(schema, onnx_bytes), frame)["outputs"]["outputData"]
    assert np.allclose(out["variable"], model.predict(X32[:, :3]), atol=1e-4)


def test_an_output_larger_than_a_reply_may_be_is_the_requests_failure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The agent measures the answer on the encoding it sends (made once): one too large
    is the request's ``success: false``, not the agent's error (the controller's 500)."""
    model = LinearRegression().fit(X[:, :3], X[:, 3])
    schema, onnx_bytes = prepare(pickled(model))
    agent = Agent(str(tmp_path / "no.sock"), str(tmp_path))
    reply, _ = agent.handle({"id": 1, "op": "realtime_init", "schema": schema}, onnx_bytes)
    assert reply == {"id": 1, "ok": True}
    frame = {f"X_{j}": X32[:, j].tolist() for j in range(3)}
    request = {"id": 2, "op": "score", "inputs": {"inputData": frame}}
    reply, _, sent = agent.answer(request, None)
    assert reply["success"] is True and sent is not None
    monkeypatch.setattr(agent_module, "REPLY_MAX", len(sent))  # 64 bytes short of it
    encodings: list[Any] = []
    dumps = agent_module.protocol.dumps
    monkeypatch.setattr(
        agent_module.protocol, "dumps", lambda value: encodings.append(value) or dumps(value)
    )
    reply, blob, sent = agent.answer({**request, "id": 3}, None)
    assert reply["ok"] is True and reply["success"] is False and blob is None
    assert f"the output of {len(X):,} rows takes" in reply["error"]
    assert "score fewer rows" in reply["error"] and reply["outputs"] == {"outputData": None}
    assert sent is not None and json.loads(sent) == reply
    assert len(encodings) == 2  # the answer, once; then the failure sent in its place


# --- ONNX uploads --------------------------------------------------------------------------


def converted(model: Any, zipmap: bool) -> bytes:
    from skl2onnx import to_onnx

    options = None if zipmap else {id(model): {"zipmap": False}}
    return bytes(to_onnx(model, X32[:1], options=options).SerializeToString())


def test_an_onnx_model_is_served_as_it_came() -> None:
    model = LogisticRegression(max_iter=1000).fit(X, Y)
    data = converted(model, zipmap=False)
    schema, onnx_bytes = prepare(data)
    assert onnx_bytes == data
    assert [t["columns"] for t in schema["outputs"]] == [
        ["label"],
        ["probabilities_0", "probabilities_1", "probabilities_2"],
    ]
    out = score(served(schema, onnx_bytes), iris_frame(schema["inputs"][0]["columns"]))
    assert out["outputs"]["outputData"]["label"] == model.predict(X32).tolist()


def test_a_zipmap_is_taken_off_the_probabilities() -> None:
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, Y)
    schema, onnx_bytes = prepare(converted(model, zipmap=True))
    assert "ZipMap" not in {n.op_type for n in onnx.load_from_string(onnx_bytes).graph.node}
    (label, probabilities) = schema["outputs"]
    assert label["name"] == "output_label"
    assert probabilities["type"] == "float" and len(probabilities["columns"]) == 3
    out = score(served(schema, onnx_bytes), iris_frame(schema["inputs"][0]["columns"]))
    expected = model.predict_proba(X32)
    values = out["outputs"]["outputData"]
    for c, column in enumerate(probabilities["columns"]):
        assert np.allclose(values[column], expected[:, c], atol=1e-5)


def test_a_crafted_zipmap_is_a_refusal_not_a_crash() -> None:
    model = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, Y)
    parsed = onnx.load_from_string(converted(model, zipmap=True))
    zipmap = next(n for n in parsed.graph.node if n.op_type == "ZipMap")
    zipmap.input.append(zipmap.input[0])  # two inputs: no ZipMap has that
    assert "cannot be read" in refusal(parsed.SerializeToString())


def graph_model(
    nodes: list[Any],
    inputs: list[Any],
    outputs: list[Any],
    initializers: list[Any] | None = None,
    opsets: dict[str, int] | None = None,
    metadata: dict[str, str] | None = None,
    **extra: Any,
) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers or [])
    imports = [helper.make_opsetid(d, v) for d, v in (opsets or {"": 17}).items()]
    model = helper.make_model(graph, opset_imports=imports, ir_version=9, **extra)
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return bytes(model.SerializeToString())


def vector(name: str, dims: list[Any], kind: int = TensorProto.FLOAT) -> Any:
    return helper.make_tensor_value_info(name, kind, dims)


def test_nan_and_infinities_come_back_null_and_columns_take_metadata_names() -> None:
    data = graph_model(
        [
            helper.make_node("Div", ["a", "b"], ["d"]),
            helper.make_node("Unsqueeze", ["d", "ax"], ["q"]),
        ],
        [vector("a", ["N"], TensorProto.DOUBLE), vector("b", ["N"], TensorProto.DOUBLE)],
        [vector("q", ["N", 1], TensorProto.DOUBLE)],
        initializers=[helper.make_tensor("ax", TensorProto.INT64, [1], [1])],
        metadata={"o16n.columns.q": '["ratio"]'},
    )
    schema, onnx_bytes = prepare(data)
    assert schema == {
        "inputs": [
            {"name": "a", "type": "double", "columns": ["a"]},
            {"name": "b", "type": "double", "columns": ["b"]},
        ],
        "outputs": [{"name": "q", "type": "double", "columns": ["ratio"]}],
    }
    ops = served(schema, onnx_bytes)
    reply = score(ops, {"a": [1.0, None, 1.0, -1.0], "b": [2.0, 1.0, 0.0, 0.0]})
    assert reply["success"], reply["error"]
    assert reply["outputs"] == {"outputData": {"ratio": [0.5, None, None, None]}}


def test_an_onnxruntime_error_is_the_requests_not_the_agents() -> None:
    data = graph_model(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        [vector("x", ["N"])],
        [vector("y", ["M", 3])],
        initializers=[helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 3])],
    )
    ops = served(*prepare(data))
    good = score(ops, {"x": [1.0, 2.0, 3.0]})
    assert good["success"] and good["outputs"]["outputData"] == {
        "y_0": [1.0],
        "y_1": [2.0],
        "y_2": [3.0],
    }
    bad = score(ops, {"x": [1.0, 2.0, 3.0, 4.0]})
    assert bad["success"] is False and "onnxruntime" in bad["error"]
    assert bad["outputs"] == {"outputData": None}
    assert score(ops, {"x": [5.0, 6.0, 7.0]})["success"]  # and it goes on serving


def test_a_column_that_does_not_fit_its_tensor_is_invalid() -> None:
    ops = served(*prepare(pickled(LogisticRegression(max_iter=1000).fit(X, Y))))
    frame = iris_frame([f"X_{j}" for j in range(4)])
    with pytest.raises(OpError, match="X_3") as caught:
        ops.score({"inputs": {"inputData": {**frame, "X_3": ["a"] * len(X)}}}, None)
    assert caught.value.code == "invalid"
    with pytest.raises(OpError, match="X_1"):
        ops.score({"inputs": {"inputData": {**frame, "X_1": [1.0]}}}, None)
    with pytest.raises(OpError, match="inputData"):
        ops.score({"inputs": {}}, None)


def test_an_interrupt_ends_the_request_only() -> None:
    """The agent's ``SIGINT`` handler raises ``KeyboardInterrupt`` while ``executing``: in
    onnxruntime's run, when it returns."""
    states: list[bool] = []
    ops = served(*prepare(pickled(LogisticRegression(max_iter=1000).fit(X, Y))))
    ops._on_state = states.append
    real = ops.session

    class Interrupted:
        def run(self, *args: Any) -> Any:
            assert states == [True]
            raise KeyboardInterrupt

    ops.session = Interrupted()
    reply = score(ops, iris_frame([f"X_{j}" for j in range(4)]))
    assert reply["success"] is False and "interrupted" in reply["error"]
    assert states == [True, False]
    ops.session = real
    assert score(ops, iris_frame([f"X_{j}" for j in range(4)]))["success"]


def test_a_model_that_is_not_the_published_one_does_not_serve() -> None:
    schema, onnx_bytes = prepare(pickled(LogisticRegression(max_iter=1000).fit(X, Y)))
    schema["outputs"][0]["columns"] = ["other"]
    ops = RealtimeOps(lambda running: None)
    reply, _ = ops.init({"schema": schema}, onnx_bytes)
    assert "SCHEMA" in reply["init_error"]
    result = score(ops, {"X_0": [1.0]})
    assert result["success"] is False and result["error"] == reply["init_error"]
    assert RealtimeOps(lambda running: None).score({"inputs": {}}, None)[0]["success"] is False


# --- refusals ------------------------------------------------------------------------------


class Unconvertible(BaseEstimator):  # type: ignore[misc]
    def fit(self, x: Any, y: Any = None) -> Unconvertible:
        self.n_features_in_ = x.shape[1]
        return self

    def predict(self, x: Any) -> Any:
        return x[:, 0]


def test_an_estimator_skl2onnx_cannot_convert_is_named() -> None:
    why = refusal(pickled(Unconvertible().fit(X)))
    assert why.startswith("cannot convert Unconvertible to ONNX")
    from sklearn.cluster import DBSCAN

    assert "cannot convert DBSCAN" in refusal(pickled(DBSCAN().fit(X)))
    assert "fitted" in refusal(pickled(LogisticRegression()))


def test_what_is_no_model_is_refused() -> None:
    assert "not a scikit-learn estimator" in refusal(pickled({"weights": [1, 2]}))
    assert "neither a pickle nor an ONNX model" in refusal(b"\x01\x02 certainly not a model")
    assert "pickle cannot be loaded" in refusal(b"\x80\x04 truncated")
    assert "empty" in refusal(b"")


def test_external_data_is_refused_wherever_it_is() -> None:
    weights = helper.make_tensor("w", TensorProto.FLOAT, [2], [0.0, 0.0])
    weights.ClearField("float_data")
    weights.data_location = TensorProto.EXTERNAL
    location = weights.external_data.add()
    location.key, location.value = "location", "weights.bin"
    data = graph_model(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        [vector("x", ["N", 2])],
        [vector("y", ["N", 2])],
        initializers=[weights],
    )
    assert "external data" in refusal(data) and "'w'" in refusal(data)
    # in a Constant's tensor, inside an If's branch
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=weights)], "then", [], [vector("c", [2])]
    )
    other = helper.make_graph(
        [helper.make_node("Constant", [], ["c2"], value_floats=[1.0, 1.0])],
        "else",
        [],
        [vector("c2", [2])],
    )
    data = graph_model(
        [
            helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
            helper.make_node("Cast", ["s"], ["flag"], to=TensorProto.BOOL),
            helper.make_node("If", ["flag"], ["k"], then_branch=branch, else_branch=other),
            helper.make_node("Add", ["x", "k"], ["y"]),
        ],
        [vector("x", ["N", 2])],
        [vector("y", ["N", 2])],
    )
    assert "external data" in refusal(data)


def test_only_standard_domains_and_no_functions() -> None:
    data = graph_model(
        [helper.make_node("Secret", ["x"], ["y"], domain="com.example")],
        [vector("x", ["N", 2])],
        [vector("y", ["N", 2])],
        opsets={"": 17, "com.example": 1},
    )
    assert "'com.example'" in refusal(data)
    function = helper.make_function(
        "local",
        "Twice",
        ["a"],
        ["b"],
        [helper.make_node("Add", ["a", "a"], ["b"])],
        [helper.make_opsetid("", 17)],
    )
    data = graph_model(
        [helper.make_node("Twice", ["x"], ["y"], domain="local")],
        [vector("x", ["N", 2])],
        [vector("y", ["N", 2])],
        functions=[function],
    )
    assert "functions" in refusal(data)


@pytest.mark.parametrize(
    ("dims", "why"),
    [
        ([3, 2], "fixed first dimension"),
        (["N", 2, 2], "rank 3"),
        (["N", "K"], "no fixed second dimension"),
    ],
)
def test_inputs_that_are_no_columns_are_refused(dims: list[Any], why: str) -> None:
    data = graph_model(
        [helper.make_node("Identity", ["x"], ["y"])], [vector("x", dims)], [vector("y", dims)]
    )
    assert why in refusal(data)


def test_column_names_must_be_unique_and_named_right() -> None:
    identity = [helper.make_node("Identity", ["x"], ["y"])]
    data = graph_model(
        identity,
        [vector("x", ["N", 2])],
        [vector("y", ["N", 2])],
        metadata={"o16n.columns.x": '["a", "a"]'},
    )
    assert "twice" in refusal(data)
    data = graph_model(
        identity,
        [vector("x", ["N", 2])],
        [vector("y", ["N", 2])],
        metadata={"o16n.columns.y": '["a"]'},
    )
    assert "names 1 columns" in refusal(data)


def test_a_sequence_output_is_refused_with_a_hint() -> None:
    data = graph_model(
        [helper.make_node("SequenceConstruct", ["x"], ["s"])],
        [vector("x", ["N", 2])],
        [helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, ["N", 2])],
    )
    assert "zipmap" in refusal(data)


def test_a_result_over_the_blob_limit_is_too_large() -> None:
    with pytest.raises(OpError) as caught:
        prepare(pickled(LogisticRegression(max_iter=1000).fit(X, Y)), blob_limit=100)
    assert caught.value.code == "too_large"


# --- in the agent --------------------------------------------------------------------------


def test_the_agent_answers_the_operations(tmp_path: Path) -> None:
    agent = Agent(str(tmp_path / "no.sock"), str(tmp_path))
    reply, blob = agent.handle({"id": 1, "op": "model_prepare"}, b"\x01 no model")
    assert reply["ok"] is False and reply["code"] == "invalid" and blob is None
    data = pickled(LogisticRegression(max_iter=1000).fit(X, Y))
    reply, onnx_bytes = agent.handle({"id": 2, "op": "model_prepare", "blob_limit": 1 << 20}, data)
    assert reply["ok"] is True and isinstance(onnx_bytes, bytes)
    reply, _ = agent.handle({"id": 3, "op": "realtime_init", "schema": reply["schema"]}, onnx_bytes)
    assert reply == {"id": 3, "ok": True}
    frame = iris_frame([f"X_{j}" for j in range(4)])
    reply, _ = agent.handle({"id": 4, "op": "score", "inputs": {"inputData": frame}}, None)
    assert reply["ok"] is True and reply["success"] is True
    assert agent.executing is False
    assert "score" in agent_module.INTERRUPTIBLE and "score" in agent_link.INTERRUPTIBLE
