"""Whether an ONNX model may be served, and the columns it takes and gives (its SCHEMA).

A realtime service runs no user code, only onnxruntime on the model; so the model is
checked before use, here, in the container (the controller parses no model). It must pass
onnx's checker, use only the standard operator domains, carry no external-data reference
anywhere (onnxruntime would read such a file relative to its working directory) and no
model-local function, and declare tensor inputs and outputs whose first dimension is the
rows and whose second, when there is one, is a fixed number of columns.

SCHEMA is JSON: ``{"inputs": [{"name", "type", "columns"}], "outputs": [...]}``. Columns
are named by the metadata entry ``o16n.columns.<tensor>`` (a JSON list), else after the
tensor (``<name>``, or ``<name>_<j>`` for more than one). onnx is imported when first used,
so sessions and Python services never pay for it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from o16n_agent.errors import OpError

#: ONNX tensor element types a column can hold, by their ``TensorProto`` number
TYPES = {
    1: "float",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    8: "string",
    9: "bool",
    11: "double",
    12: "uint32",
    13: "uint64",
}
#: operator domains a model may use: ONNX's own and its classical machine-learning one
DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
COLUMNS_KEY = "o16n.columns."
COLUMN_NAME_MAX = 256
EXTERNAL = 1  # TensorProto.EXTERNAL


class ModelRefused(OpError):
    """A model that cannot be served; the message says why (the publisher's 400)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "invalid")


def parse(data: bytes) -> Any:
    """The ``ModelProto`` in ``data``; refused when it is not one."""
    import onnx

    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError, chiefly
        raise ModelRefused(f"the model is neither a pickle nor an ONNX model: {exc}") from None
    if not model.HasField("graph") or model.ir_version <= 0:
        raise ModelRefused("the model is neither a pickle nor an ONNX model (no graph)")
    return model


def validate(model: Any) -> dict[str, Any]:
    """Check ``model`` (a ``ModelProto``) and return its SCHEMA; ``ModelRefused`` says why not."""
    import onnx

    if model.functions:
        names = ", ".join(sorted({f.name for f in model.functions}))
        raise ModelRefused(f"the model defines its own functions ({names}); none are allowed")
    for graph, where in _all_graphs(model):
        _check_graph_data(graph, where)
    for opset in model.opset_import:
        if opset.domain not in DOMAINS:
            raise ModelRefused(
                f"the model imports the operator domain {opset.domain!r}: "
                "only the standard ones ('', 'ai.onnx', 'ai.onnx.ml') are allowed"
            )
    for graph, where in _all_graphs(model):
        for node in graph.node:
            if node.domain not in DOMAINS:
                raise ModelRefused(
                    f"node {node.name or node.op_type!r} ({where}) uses the operator "
                    f"{node.op_type!r} of domain {node.domain!r}: only the standard domains "
                    "('', 'ai.onnx', 'ai.onnx.ml') are allowed"
                )
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # ValidationError, and whatever else a broken model raises
        raise ModelRefused(f"the ONNX checker refuses the model: {_text(exc)}") from None
    return schema_of(model)


def schema_of(model: Any) -> dict[str, Any]:
    """SCHEMA: the model's graph inputs (initializers excepted) and outputs, as columns."""
    graph = model.graph
    metadata = {p.key: p.value for p in model.metadata_props}
    initialized = {t.name for t in graph.initializer} | {
        s.values.name for s in graph.sparse_initializer
    }
    inputs = [v for v in graph.input if v.name not in initialized]
    if not inputs:
        raise ModelRefused("the model declares no inputs")
    if not graph.output:
        raise ModelRefused("the model declares no outputs")
    schema = {
        "inputs": [_tensor(v, "input", metadata) for v in inputs],
        "outputs": [_tensor(v, "output", metadata) for v in graph.output],
    }
    for side in ("inputs", "outputs"):
        seen: dict[str, str] = {}
        for tensor in schema[side]:
            for column in tensor["columns"]:
                if column in seen:
                    raise ModelRefused(
                        f"the column name {column!r} is used twice among the {side} "
                        f"({seen[column]!r} and {tensor['name']!r}); set the metadata "
                        f"'{COLUMNS_KEY}<tensor>' to name them apart"
                    )
                seen[column] = tensor["name"]
    return schema


def _tensor(value: Any, kind: str, metadata: dict[str, str]) -> dict[str, Any]:
    """One input's or output's SCHEMA entry, from its ``ValueInfoProto``."""
    name = value.name
    field = value.type.WhichOneof("value")
    if field == "sequence_type" and kind == "output":
        raise ModelRefused(
            f"output {name!r} is a sequence (a ZipMap's list of maps, probably), not a "
            "tensor: convert the model with the ZipMap turned off (skl2onnx: "
            "options={id(model): {'zipmap': False}})"
        )
    if field != "tensor_type":
        raise ModelRefused(f"{kind} {name!r} is a {field or 'value of no type'}, not a tensor")
    tensor = value.type.tensor_type
    type_name = TYPES.get(tensor.elem_type)
    if type_name is None:
        allowed = ", ".join(TYPES.values())
        raise ModelRefused(
            f"{kind} {name!r} holds elements of ONNX type {tensor.elem_type}; allowed are {allowed}"
        )
    if not tensor.HasField("shape"):
        raise ModelRefused(f"{kind} {name!r} declares no shape: [rows] or [rows, k] is needed")
    dims = tensor.shape.dim
    if len(dims) not in (1, 2):
        raise ModelRefused(
            f"{kind} {name!r} has rank {len(dims)}: only [rows] or [rows, k] maps to columns"
        )
    if dims[0].HasField("dim_value"):
        raise ModelRefused(
            f"{kind} {name!r} has a fixed first dimension ({dims[0].dim_value}): it is the "
            "rows and must be dynamic (a dim_param or unknown)"
        )
    k = 1
    if len(dims) == 2:
        if not dims[1].HasField("dim_value") or dims[1].dim_value <= 0:
            raise ModelRefused(
                f"{kind} {name!r} has no fixed second dimension: [rows, k] needs k fixed, "
                "it is the number of columns"
            )
        k = dims[1].dim_value
    columns = _columns(name, kind, len(dims), k, metadata)
    return {"name": name, "type": type_name, "columns": columns}


def _columns(name: str, kind: str, rank: int, k: int, metadata: dict[str, str]) -> list[str]:
    key = COLUMNS_KEY + name
    if key in metadata:
        try:
            columns = json.loads(metadata[key])
        except ValueError:
            raise ModelRefused(f"the metadata {key!r} is not JSON") from None
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise ModelRefused(f"the metadata {key!r} is not a JSON list of strings")
        if len(columns) != k:
            raise ModelRefused(
                f"the metadata {key!r} names {len(columns)} columns; {kind} {name!r} has {k}"
            )
        if len(set(columns)) != len(columns):
            raise ModelRefused(f"the metadata {key!r} names a column twice")
    elif rank == 1 or k == 1:
        columns = [name]
    else:
        columns = [f"{name}_{j}" for j in range(k)]
    for column in columns:
        if not 1 <= len(column) <= COLUMN_NAME_MAX:
            raise ModelRefused(
                f"{kind} {name!r}: the column name {column[:40]!r} is "
                f"{'empty' if not column else 'longer than 256 characters'}"
            )
    return columns


def _all_graphs(model: Any) -> Iterator[tuple[Any, str]]:
    """The main graph, its subgraphs (``If``, ``Loop``, ``Scan`` bodies) at any depth, and
    training-info graphs, each with where it is (for messages)."""
    pending = [(model.graph, "main graph")]
    for i, info in enumerate(model.training_info):
        pending.append((info.initialization, f"training info {i} initialization"))
        pending.append((info.algorithm, f"training info {i} algorithm"))
    while pending:
        graph, where = pending.pop()
        yield graph, where
        for node in graph.node:
            for attribute in node.attribute:
                inner = f"{where} > {node.name or node.op_type}.{attribute.name}"
                if attribute.HasField("g"):
                    pending.append((attribute.g, inner))
                pending.extend((g, inner) for g in attribute.graphs)


def _check_graph_data(graph: Any, where: str) -> None:
    """No tensor of ``graph`` (initializers, attributes) refers to external data."""
    tensors: list[tuple[Any, str]] = [(t, "initializer") for t in graph.initializer]
    for sparse in graph.sparse_initializer:
        tensors += [(sparse.values, "sparse initializer"), (sparse.indices, "sparse initializer")]
    for node in graph.node:
        for attribute in node.attribute:
            label = f"attribute {attribute.name!r} of node {node.name or node.op_type!r}"
            if attribute.HasField("t"):
                tensors.append((attribute.t, label))
            tensors += [(t, label) for t in attribute.tensors]
            for sparse in [
                *([attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []),
                *attribute.sparse_tensors,
            ]:
                tensors += [(sparse.values, label), (sparse.indices, label)]
    for tensor, what in tensors:
        if tensor.data_location == EXTERNAL or len(tensor.external_data):
            raise ModelRefused(
                f"the {what} {tensor.name!r} ({where}) refers to external data: "
                "the model must hold all its data (save it without external data)"
            )


def _text(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text or type(exc).__name__)[:2000]


def remove_zipmap(model: Any) -> bool:
    """Serve a classifier's probabilities as a tensor: an output made by a ``ZipMap`` (a
    list of maps, which has no columns) becomes the ZipMap's input, ``[rows, classes]``,
    its columns ``<tensor>_<class>``. Whether the model changed."""
    import onnx

    graph = model.graph
    outputs = {v.name for v in graph.output}
    consumed = {name for node in graph.node for name in node.input}
    changed = False
    for node in list(graph.node):
        if node.op_type != "ZipMap" or node.domain != "ai.onnx.ml":
            continue
        (source,), (target,) = node.input, node.output
        if target not in outputs or target in consumed:
            continue
        labels: list[Any] = []
        for attribute in node.attribute:
            if attribute.name == "classlabels_strings":
                labels = [s.decode("utf-8", "replace") for s in attribute.strings]
            elif attribute.name == "classlabels_int64s":
                labels = list(attribute.ints)
        if not labels:
            continue
        position = next(i for i, v in enumerate(graph.output) if v.name == target)
        del graph.output[position]
        if source not in outputs:
            value = onnx.helper.make_tensor_value_info(
                source, onnx.TensorProto.FLOAT, [None, len(labels)]
            )
            graph.output.insert(position, value)
            if all(p.key != COLUMNS_KEY + source for p in model.metadata_props):
                entry = model.metadata_props.add()
                entry.key = COLUMNS_KEY + source
                entry.value = json.dumps([f"{source}_{label}" for label in labels])
        graph.node.remove(node)
        changed = True
    return changed
