"""Faster construction of frozen dataclasses (the syntax tree, expressions, the node table).

A frozen dataclass sets each field in `__init__` through `object.__setattr__`, looked up
again for every field: about a microsecond for a three-field record, and a 5,000-step process
builds a few hundred thousand of them. `quicken` gives such a class an `__init__` with the
same signature that stores each field through its slot's own descriptor, bound once: half
the time. Nothing else changes: assigning a field still raises `FrozenInstanceError`, and
equality, hashing and `repr` are the dataclass's own.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, TypeVar

T = TypeVar("T")

_NOTHING: Any = object()


def quick_init(cls: type[T]) -> type[T]:
    """Replace a frozen slotted dataclass's `__init__` (a class decorator; put it above `@dataclass`)."""
    if "__post_init__" in dir(cls) or not _slotted(cls):
        return cls  # left as the dataclass made it
    params = dataclasses.fields(cls)  # type: ignore[arg-type]
    names: dict[str, Any] = {"_NOTHING": _NOTHING}
    args: list[str] = []
    body: list[str] = []
    for f in params:
        if not f.init or f.kw_only:
            return cls
        setter = getattr(cls, f.name).__set__
        names[f"_set_{f.name}"] = setter
        if f.default is not dataclasses.MISSING:
            names[f"_default_{f.name}"] = f.default
            args.append(f"{f.name}=_default_{f.name}")
        elif f.default_factory is not dataclasses.MISSING:
            names[f"_factory_{f.name}"] = f.default_factory
            args.append(f"{f.name}=_NOTHING")
            body.append(f"    if {f.name} is _NOTHING: {f.name} = _factory_{f.name}()")
        else:
            args.append(f.name)
        body.append(f"    _set_{f.name}(self, {f.name})")
    source = f"def __init__(self, {', '.join(args)}):\n" + "\n".join(body or ["    pass"]) + "\n"
    exec(source, names)  # noqa: S102 - the source is built from the class's own field names
    init = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    setattr(cls, "__init__", init)  # noqa: B010 - replacing a method; mypy refuses the plain assignment
    return cls


def _slotted(cls: type) -> bool:
    """Every field is a slot (its class attribute the slot's member descriptor)."""
    return all(isinstance(getattr(cls, f.name, None), types.MemberDescriptorType) for f in dataclasses.fields(cls))


def quicken(namespace: dict[str, Any]) -> None:
    """`quick_init` every frozen slotted dataclass defined in a module (call at its end with `globals()`)."""
    module = namespace.get("__name__")
    for value in list(namespace.values()):
        if (
            isinstance(value, type)
            and value.__module__ == module
            and dataclasses.is_dataclass(value)
            and value.__dataclass_params__.frozen  # type: ignore[attr-defined]
            and _slotted(value)
        ):
            quick_init(value)
