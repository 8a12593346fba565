"""What the controller knows of a realtime model (controller/services/realtime/model.py): the
schema a container sends is checked field by field, a consume request's columns are
checked before any container is touched, and a container's answer before it is passed on."""

from __future__ import annotations

from typing import Any

import pytest

from controller.errors import AgentProtocolError, BadRequestError
from controller.services.realtime.model import (
    MAX_COLUMNS,
    check_frame,
    check_output,
    frame_schema,
    load_schema,
    parse_schema,
)

RAW: dict[str, Any] = {
    "inputs": [
        {"name": "X", "type": "float", "columns": ["a", "b"]},
        {"name": "n", "type": "int8", "columns": ["n"]},
        {"name": "s", "type": "string", "columns": ["s"]},
        {"name": "f", "type": "bool", "columns": ["f"]},
    ],
    "outputs": [
        {"name": "label", "type": "int64", "columns": ["label"]},
        {"name": "probabilities", "type": "float", "columns": ["p_0", "p_1"]},
    ],
}
SCHEMA = parse_schema(RAW)
GOOD = {"a": [1.5, 2], "b": [None, 0.0], "n": [-128, 127], "s": ["x", ""], "f": [True, False]}


def test_a_stored_schema_reads_back_the_same() -> None:
    assert load_schema(SCHEMA.dumps()) == SCHEMA
    assert SCHEMA.input_columns()[:2] == [("a", "float"), ("b", "float")]


@pytest.mark.parametrize(
    "raw",
    [
        None,
        [],
        {"inputs": [], "outputs": RAW["outputs"]},
        {"inputs": RAW["inputs"]},
        {
            "inputs": [{"name": "X", "type": "complex64", "columns": ["a"]}],
            "outputs": RAW["outputs"],
        },
        {"inputs": [{"name": "X", "type": "float", "columns": []}], "outputs": RAW["outputs"]},
        {"inputs": [{"name": "X", "type": "float", "columns": [1]}], "outputs": RAW["outputs"]},
        {"inputs": [{"name": "", "type": "float", "columns": ["a"]}], "outputs": RAW["outputs"]},
        {
            "inputs": [{"name": "X", "type": "float", "columns": ["a", "a"]}],
            "outputs": RAW["outputs"],
        },
        {
            "inputs": [
                {"name": "X", "type": "float", "columns": ["a"]},
                {"name": "Y", "type": "float", "columns": ["a"]},
            ],
            "outputs": RAW["outputs"],
        },
        {
            "inputs": [{"name": "X", "type": "float", "columns": ["x" * 257]}],
            "outputs": RAW["outputs"],
        },
        {
            "inputs": [
                {"name": "X", "type": "float", "columns": [f"c{i}" for i in range(MAX_COLUMNS + 1)]}
            ],
            "outputs": RAW["outputs"],
        },
    ],
)
def test_a_malformed_schema_from_a_container_is_refused(raw: Any) -> None:
    with pytest.raises(AgentProtocolError):
        parse_schema(raw)


def test_a_well_formed_frame_keeps_only_the_model_columns() -> None:
    checked = check_frame(SCHEMA, {"inputData": {**GOOD, "extra": ["ignored"]}, "other": 1})
    assert checked == {"inputData": GOOD}


@pytest.mark.parametrize(
    ("frame", "says"),
    [
        ({k: v for k, v in GOOD.items() if k != "b"}, "no column 'b'"),
        ({k: v for k, v in GOOD.items() if k not in ("a", "b")}, "missing: a, b"),
        ({**GOOD, "a": 1.0}, "column 'a' must be an array"),
        ({**GOOD, "a": [1.0]}, "column 'b' has 2 rows, column 'a' has 1"),
        ({k: [] for k in GOOD}, "column 'a' has no rows"),
        ({**GOOD, "a": [1.0, "2"]}, "column 'a' (numbers or null): row 1 is \"2\""),
        ({**GOOD, "a": [True, 1.0]}, "row 0 is true"),
        ({**GOOD, "a": [1.0, 1e39]}, "row 1 is 1e+39, beyond what a float holds"),
        ({**GOOD, "a": [1.0, 10**400]}, "column 'a' (numbers or null): row 1 is 1000"),
        ({**GOOD, "n": [1, 128]}, "column 'n' (integers from -128 to 127): row 1 is 128"),
        ({**GOOD, "n": [1, 2.0]}, "column 'n'"),
        ({**GOOD, "s": ["x", 1]}, "column 's' (strings)"),
        ({**GOOD, "f": [1, 0]}, "column 'f' (true or false)"),
        ({**GOOD, "s": ["x", ["y" * 10**6]]}, "row 1 is an array"),
        ({**GOOD, "s": ["x", {"y": 1}]}, "row 1 is an object"),
    ],
)
def test_a_bad_frame_is_a_400_naming_the_column(frame: dict[str, Any], says: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        check_frame(SCHEMA, {"inputData": frame})
    assert says in caught.value.message


@pytest.mark.parametrize("body", [[], "x", {}, {"inputData": [1, 2]}, {"inputdata": GOOD}])
def test_a_body_without_a_data_frame_is_a_400(body: Any) -> None:
    with pytest.raises(BadRequestError) as caught:
        check_frame(SCHEMA, body)
    assert "inputData" in caught.value.message


def test_a_containers_answer_must_be_the_output_columns_row_for_row() -> None:
    good = {"outputData": {"label": [0, 1], "p_0": [0.5, None], "p_1": [0.5, 1.0], "x": [1]}}
    assert check_output(SCHEMA, good, 2) == {
        "outputData": {"label": [0, 1], "p_0": [0.5, None], "p_1": [0.5, 1.0]}
    }
    for bad in (
        None,
        {},
        {"outputData": []},
        {"outputData": {"label": [0, 1], "p_0": [0.5, 0.5]}},
        {"outputData": {"label": [0], "p_0": [0.5], "p_1": [0.5]}},
        {"outputData": {"label": [0, [1]], "p_0": [0.5, 0.5], "p_1": [0.5, 0.5]}},
        {"outputData": {"label": [0, {}], "p_0": [0.5, 0.5], "p_1": [0.5, 0.5]}},
        {"outputData": {"label": [0, 1], "p_0": ["0.5", 0.5], "p_1": [0.5, 0.5]}},
        {"outputData": {"label": [0, None], "p_0": [0.5, 0.5], "p_1": [0.5, 0.5]}},
        {"outputData": {"label": [0, 1.0], "p_0": [0.5, 0.5], "p_1": [0.5, 0.5]}},
    ):
        with pytest.raises(AgentProtocolError):
            check_output(SCHEMA, bad, 2)


def test_the_swagger_frame_types_each_column() -> None:
    schema = frame_schema(SCHEMA.input_columns(), outputs=False)
    assert schema["required"] == ["a", "b", "n", "s", "f"]
    props = schema["properties"]
    assert props["a"]["items"] == {"type": "number", "format": "float", "x-nullable": True}
    assert props["n"]["items"] == {"type": "integer", "format": "int32"}
    assert props["s"]["items"] == {"type": "string"}
    assert props["f"]["items"] == {"type": "boolean"}
    assert "required" not in frame_schema(SCHEMA.output_columns(), outputs=True)
