"""The faster `__init__` of frozen records (dsl/quick.py) changes speed, not behaviour."""

from __future__ import annotations

import dataclasses
from dataclasses import FrozenInstanceError, dataclass, field

import pytest

from procflow.dsl import expressions as ex
from procflow.dsl import syntax as sx
from procflow.dsl.diagnostics import Span
from procflow.dsl.quick import quick_init


@quick_init
@dataclass(frozen=True, slots=True)
class _Record:
    name: str
    count: int = 3
    items: list[int] = field(default_factory=list)


def test_the_quick_init_keeps_signature_defaults_and_factories() -> None:
    assert _Record("a") == _Record(name="a", count=3, items=[])
    assert _Record("a", 5, [1]).items == [1]
    first, second = _Record("a"), _Record("a")
    assert first.items is not second.items  # a new list each time, as the factory says
    assert repr(_Record("a")) == "_Record(name='a', count=3, items=[])"
    with pytest.raises(TypeError):
        _Record()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _Record("a", wrong=1)  # type: ignore[call-arg]


def test_records_stay_frozen_hashable_and_replaceable() -> None:
    span = Span(1, 2, 1, 5)
    name = sx.Name("pay", span)
    with pytest.raises(FrozenInstanceError):
        name.text = "other"  # type: ignore[misc]
    assert hash(name) == hash(sx.Name("pay", span)) and name == sx.Name("pay", span)
    assert dataclasses.replace(name, text="ship") == sx.Name("ship", span)
    var = ex.Var(span, "input")
    assert ex.Field(span, var, "amount").base is var  # a field inherited from the base class is set too
    assert ex.ObjectExpr(span).pairs == ()  # default_factory


def test_a_paused_collection_leaves_the_collector_on_and_nothing_frozen() -> None:
    """Reading a process pauses the cyclic collector; afterwards it runs again and can still
    free a cycle built during the pause (nothing is left in the frozen generation)."""
    import gc
    import weakref

    from procflow.dsl.parser import collection_paused

    class Node:
        pass

    assert gc.isenabled()
    with collection_paused():
        assert not gc.isenabled()
        with collection_paused():  # nested: stays paused until the outer one ends
            pass
        assert not gc.isenabled()
        cycle = Node()
        cycle.self = cycle  # type: ignore[attr-defined]
        alive = weakref.ref(cycle)
    assert gc.isenabled() and gc.get_freeze_count() == 0
    del cycle
    gc.collect()
    assert alive() is None


def test_a_paused_collection_leaves_what_the_host_froze_frozen() -> None:
    """A server that froze its objects before forking keeps them frozen after a parse."""
    import gc

    from procflow.dsl.parser import collection_paused, parse

    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert frozen > 0
        with collection_paused():
            parse("process p { participant a step s { send a.b await c within 1s } }")
        assert gc.get_freeze_count() >= frozen
    finally:
        gc.unfreeze()
