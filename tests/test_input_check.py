"""Data is checked against a process's JSON Schemas by jsonschema-rs, with a validator built once per schema."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

import procflow
from procflow.dsl.model import canonical_json
from procflow.interpreter.contracts import schema_problem, validator_for

ROOT = Path(__file__).resolve().parent.parent

ORDER_INPUT: dict[str, Any] = {
    "type": "object",
    "properties": {"orderId": {"type": "string"}, "amount": {"type": "number"}},
    "required": ["orderId", "amount"],
}


def test_problems_are_worded_with_where_they_are() -> None:
    assert schema_problem({"orderId": "o", "amount": 1.5}, ORDER_INPUT) is None
    assert schema_problem({"orderId": "o"}, ORDER_INPUT) == '"amount" is a required property'
    assert schema_problem({"orderId": 7, "amount": 1}, ORDER_INPUT) == '7 is not of type "string" (at `orderId`)'
    # Every keyword counts, not only those the language writes; formats are not asserted, as
    # JSON Schema 2020-12 says by default, and nothing is fetched.
    assert schema_problem({"x": 2}, {"type": "object", "properties": {"x": {"type": "number", "minimum": 3}}}) == (
        "2 is less than the minimum of 3 (at `x`)"
    )
    assert schema_problem("not a date", {"type": "string", "format": "date"}) is None
    with pytest.raises(ValueError, match="Retrieval is disabled"):
        schema_problem({}, {"$ref": "https://example.com/elsewhere.json"})


def test_one_validator_per_schema_whatever_dict_holds_it() -> None:
    validator_for.cache_clear()
    reordered = {key: copy.deepcopy(ORDER_INPUT[key]) for key in reversed(ORDER_INPUT)}
    for schema in (ORDER_INPUT, copy.deepcopy(ORDER_INPUT), reordered):
        assert schema_problem({"orderId": "o", "amount": 1}, schema) is None
    info = validator_for.cache_info()
    assert info.misses == 1 and info.hits == 2


def test_a_definition_keeps_its_input_schema_as_the_text_its_validator_is_found_by() -> None:
    first, second = (procflow.load(ROOT / "processes" / "order_fulfillment.proc") for _ in range(2))
    assert first.input_schema_text == second.input_schema_text == canonical_json(ORDER_INPUT)
    assert first.input_schema_text is first.input_schema_text  # worked out once
    assert validator_for(first.input_schema_text) is validator_for(canonical_json(copy.deepcopy(ORDER_INPUT)))
