"""Checking data against the JSON Schemas a process declares (inputs, reply payloads).

A quick check answers for the schemas the language writes; on any doubt jsonschema decides,
with a validator built once per schema.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jsonschema

_SIMPLE_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}
_SIMPLE_KEYWORDS = frozenset({"type", "properties", "required", "items", "enum", "title", "description"})


def surely_valid(value: Any, schema: dict[str, Any]) -> bool:
    """A quick check for the schemas the language writes (type, properties, required, items,
    string enums): True only when jsonschema would certainly accept `value`. Anything else,
    or any doubt, says False and jsonschema decides."""
    if not schema.keys() <= _SIMPLE_KEYWORDS:
        return False
    kind = schema.get("type")
    if kind is not None:
        check = _SIMPLE_TYPES.get(kind) if isinstance(kind, str) else None
        if check is None or not check(value):
            return False
    enum = schema.get("enum")
    if enum is not None and not (isinstance(value, str) and value in enum and all(isinstance(e, str) for e in enum)):
        return False
    if isinstance(value, dict):
        for name in schema.get("required", ()):
            if name not in value:
                return False
        for name, sub in schema.get("properties", {}).items():
            if name in value and not (isinstance(sub, dict) and surely_valid(value[name], sub)):
                return False
    elif "properties" in schema or "required" in schema:
        return False  # jsonschema ignores these for non-objects; let it decide
    if isinstance(value, list) and "items" in schema:
        items = schema["items"]
        return isinstance(items, dict) and all(surely_valid(item, items) for item in value)
    return True


Check = Callable[[Any], bool]


def _never(value: Any) -> bool:
    return False


def compile_quick(schema: dict[str, Any]) -> Check:
    """`surely_valid` for one schema, worked out once: a function of the value that answers
    as `surely_valid(value, schema)` does. Schemas of an unusual shape (a `properties` that is
    not an object of objects, a `required` that is not a list of names, ...) get
    `surely_valid` itself."""
    if not schema.keys() <= _SIMPLE_KEYWORDS:
        return _never
    kind = schema.get("type")
    type_check: Check | None = None
    if kind is not None:
        type_check = _SIMPLE_TYPES.get(kind) if isinstance(kind, str) else None
        if type_check is None:
            return _never
    enum = schema.get("enum")
    required = schema.get("required", ())
    properties = schema.get("properties", {})
    items = schema.get("items")
    if (
        (enum is not None and not isinstance(enum, list))
        or not isinstance(required, list | tuple)
        or not all(isinstance(name, str) for name in required)
        or not isinstance(properties, dict)
        or not all(isinstance(sub, dict) for sub in properties.values())
        or ("items" in schema and not isinstance(items, dict))
    ):
        return lambda value: surely_valid(value, schema)
    if enum is not None and not all(isinstance(e, str) for e in enum):
        return _never
    names = tuple(required)
    subs = tuple((name, compile_quick(sub)) for name, sub in properties.items())
    item_check = compile_quick(items) if isinstance(items, dict) else None
    object_keywords = "properties" in schema or "required" in schema

    def check(value: Any) -> bool:
        if type_check is not None and not type_check(value):
            return False
        if enum is not None and not (isinstance(value, str) and value in enum):
            return False
        if isinstance(value, dict):
            for name in names:
                if name not in value:
                    return False
            for name, sub in subs:
                if name in value and not sub(value[name]):
                    return False
        elif object_keywords:
            return False
        if item_check is not None and isinstance(value, list):
            return all(item_check(item) for item in value)
        return True

    return check


_VALIDATORS: dict[int, tuple[dict[str, Any], jsonschema.protocols.Validator]] = {}
_QUICK: dict[int, tuple[dict[str, Any], Check]] = {}


def schema_problem(value: Any, schema: dict[str, Any]) -> str | None:
    """None when `value` satisfies `schema`; else the most relevant problem, in words.

    The quick check and the validator are built once per schema (definitions are immutable; the schema is kept
    alive beside its validator so its id cannot be reused)."""
    quick = _QUICK.get(id(schema))
    if quick is None or quick[0] is not schema:
        quick = _QUICK[id(schema)] = (schema, compile_quick(schema))
    if quick[1](value):
        return None
    import jsonschema  # here, not at the top: a command that checks no data starts 0.1 s sooner

    cached = _VALIDATORS.get(id(schema))
    if cached is None or cached[0] is not schema:
        cached = (schema, jsonschema.Draft202012Validator(schema))
        _VALIDATORS[id(schema)] = cached
    validator = cached[1]
    if validator.is_valid(value):
        return None
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{error.message}" + (f" (at `{where}`)" if where else "")
