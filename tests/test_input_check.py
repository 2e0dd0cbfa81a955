"""The quick input check never accepts what jsonschema would refuse."""

from __future__ import annotations

from typing import Any

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st

from procflow.interpreter.contracts import compile_quick, surely_valid

SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {"orderId": {"type": "string"}, "amount": {"type": "number"}}, "required": ["orderId", "amount"]},
    {"type": "object", "properties": {"n": {"type": "integer"}, "tier": {"type": "string", "enum": ["gold", "silver"]}}},
    {"type": "object", "properties": {"lines": {"type": "array", "items": {"type": "object", "properties": {"sku": {"type": "string"}}, "required": ["sku"]}}}},
    {"type": "object", "properties": {"flag": {"type": "boolean"}, "any": {}}, "required": ["flag"]},
    {"type": "object", "properties": {"x": {"type": "number", "minimum": 3}}},
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.sampled_from(["gold", "silver", "x", ""]),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["orderId", "amount", "n", "tier", "lines", "sku", "flag", "any", "x"]), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(value=json_values, index=st.integers(min_value=0, max_value=len(SCHEMAS) - 1))
def test_quick_check_agrees_with_jsonschema(value: Any, index: int) -> None:
    schema = SCHEMAS[index]
    if surely_valid(value, schema):
        assert jsonschema.Draft202012Validator(schema).is_valid(value)
    # The check worked out once per schema answers as the general one does.
    assert compile_quick(schema)(value) == surely_valid(value, schema)


def test_quick_check_accepts_the_common_case() -> None:
    assert surely_valid({"orderId": "o", "amount": 1.5}, SCHEMAS[0])
    assert not surely_valid({"orderId": "o"}, SCHEMAS[0])
    assert not surely_valid({"x": 5}, SCHEMAS[4])  # `minimum` is left to jsonschema
