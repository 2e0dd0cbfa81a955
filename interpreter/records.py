"""Slotted dataclass records with pydantic's validation, JSON and JSON Schema (via TypeAdapter).

A record is built by its dataclass constructor and kept as a plain slotted object, and still
offers the pydantic calls people expect: `model_validate`, `model_validate_json`,
`model_dump`, `model_dump_json`, `model_json_schema`, `model_copy`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, TypeVar

from pydantic import TypeAdapter

R = TypeVar("R", bound="Record")


_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}


def _adapter(cls: type[Any]) -> TypeAdapter[Any]:
    """The pydantic adapter of a record class (built on first use: building one takes milliseconds)."""
    adapter = _ADAPTERS.get(cls)
    if adapter is None:
        adapter = _ADAPTERS[cls] = TypeAdapter(cls)
    return adapter


class Record:
    """Pydantic-style conveniences for the slotted dataclass records (validation via TypeAdapter)."""

    __slots__ = ()

    @classmethod
    def model_validate(cls: type[R], data: Any) -> R:
        """Build and validate from Python data (dicts, lists, ...); pydantic's ValidationError when wrong."""
        result: R = _adapter(cls).validate_python(data)
        return result

    @classmethod
    def model_validate_json(cls: type[R], data: str | bytes) -> R:
        """Build and validate from JSON text."""
        result: R = _adapter(cls).validate_json(data)
        return result

    @classmethod
    def model_json_schema(cls) -> dict[str, Any]:
        """The JSON Schema of the record."""
        schema: dict[str, Any] = _adapter(cls).json_schema()
        return schema

    def model_dump(self, mode: Literal["json", "python"] = "python") -> dict[str, Any]:
        """The record as a dict (`mode="json"`: JSON-ready values)."""
        data: dict[str, Any] = _adapter(type(self)).dump_python(self._serializable(), mode=mode)
        return data

    def model_dump_json(self) -> str:
        """The record as compact JSON text."""
        return _adapter(type(self)).dump_json(self._serializable()).decode("utf-8")

    def _serializable(self: R) -> R:
        """The record as pydantic is to write it (itself, unless a record says otherwise)."""
        return self

    def model_copy(self: R, update: dict[str, Any] | None = None) -> R:
        """A shallow copy, with some fields replaced."""
        return dataclasses.replace(self, **(update or {}))  # type: ignore[type-var]


