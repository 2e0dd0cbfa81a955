"""The validator's proofs are networkx algorithms run on the compiled graph.

Each proof is named with the algorithms it calls: a spy on each algorithm sees it called
while a process that exercises the proof is validated, and a process that breaks the proof
gets its diagnostic (one that keeps it gets none). The proofs read flow only from the graph:
a definition whose node records point nowhere, beside the same graph, validates the same.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import networkx as nx
import pytest

from procflow.dsl import model as m
from procflow.dsl.compiler import compile_source
from procflow.dsl.validate import check_source, validate
from procflow.errors import SourceError

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "validation.md").read_text(encoding="utf-8")

HEAD = """process p {
  correlate by input.id
  input { id: string, ok: boolean }
  participant svc "Service"
  event ping { ok: boolean }
  event pong
"""


def process(body: str) -> str:
    return HEAD + body + "}\n"


STEP = """  step {name} {{
    send svc.act {{ id: input.id }}
    await done within 1m
    compensate svc.undo {{ id: input.id }} awaiting undone within 1m
  }}
"""


def step(name: str) -> str:
    return STEP.format(name=name)


# (proof, the networkx algorithms it calls, a process that breaks it, its code, a process that keeps it)
PROOFS: list[tuple[str, tuple[str, ...], str, str, str]] = [
    (
        "a statement can be reached",
        ("has_path",),
        process('  fail "closed"\n' + step("charge")),
        "E116",
        process('  if input.ok {\n    fail "closed"\n  } else {\n' + step("check") + "  }\n" + step("charge")),
    ),
    (
        "a parallel join can fire",
        ("has_path",),
        process('  parallel checks {\n    branch a {\n' + step("one") + '      fail "never"\n    }\n'
                '    branch b {\n' + step("two") + "    }\n  }\n" + step("after")),
        "E119",
        process("  parallel checks {\n    branch a {\n" + step("one") + "    }\n"
                "    branch b {\n" + step("two") + "    }\n  }\n" + step("after")),
    ),
    (
        "a name is bound before it is read",
        ("immediate_dominators", "has_path"),
        process("  if input.ok {\n    step ask {\n      await ping as answer within 1h\n    }\n  }\n"
                "  if answer.ok {\n    end\n  }\n"),
        "E114",
        process("  if input.ok {\n    step ask {\n      await ping as answer within 1h\n    }\n  } else {\n"
                "    step ask_again {\n      await ping as answer within 1h\n    }\n  }\n"
                "  if answer.ok {\n    end\n  }\n"),
    ),
    (
        "a name bound in a parallel branch is read beside it",
        ("generic_bfs_edges", "immediate_dominators", "has_path"),
        process("  parallel both {\n    branch a {\n      step ask {\n        await ping as answer within 1h\n      }\n    }\n"
                "    branch b {\n      if answer.ok {\n        step later {\n          wait 1m\n        }\n      }\n    }\n  }\n"),
        "E114",
        process("  parallel both {\n    branch a {\n      step ask {\n        await ping as answer within 1h\n      }\n    }\n"
                "    branch b {\n      step wait_a_bit {\n        wait 1m\n      }\n    }\n  }\n"
                "  if answer.ok {\n    end\n  }\n"),
    ),
    (
        "a failure can follow a step left without compensation",
        ("bfs_labeled_edges",),
        process("  step notify {\n    send svc.act { id: input.id }\n    await done within 1m\n  }\n"
                '  if input.ok {\n    fail "refused"\n  }\n'),
        "W201",
        process('  if input.ok {\n    fail "refused"\n  }\n'
                "  step notify {\n    send svc.act { id: input.id }\n    await done within 1m\n  }\n"),
    ),
    (
        "a failure in a parallel branch beside a step left without compensation",
        ("bfs_labeled_edges", "generic_bfs_edges"),
        process("  parallel both {\n    branch a {\n      step notify {\n        send svc.act { id: input.id }\n"
                "        await done within 1m\n      }\n    }\n"
                '    branch b {\n      if input.ok {\n        fail "refused"\n      }\n    }\n  }\n'),
        "W201",
        process("  parallel both {\n    branch a {\n      step notify {\n        send svc.act { id: input.id }\n"
                "        await done within 1m\n      }\n    }\n"
                "    branch b {\n      step pause {\n        wait 1m\n      }\n    }\n  }\n"),
    ),
    (
        "a loop can repeat only as often as its bound",
        ("strongly_connected_components",),
        process("  repeat poll {\n    step look {\n      await ping as seen within 1h\n    }\n  } until seen.ok\n"),
        "E124",
        process("  repeat poll max 3 {\n    step look {\n      await ping as seen within 1h\n    }\n  } until seen.ok\n"),
    ),
]


@pytest.fixture
def spies(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Count the calls of every networkx algorithm the proofs name, wherever they come from."""
    calls: Counter[str] = Counter()
    names = {name for _, algorithms, _, _, _ in PROOFS for name in algorithms} | {"descendants"}
    for name in names:
        monkeypatch.setattr(nx, name, _spy(getattr(nx, name), name, calls))
    yield calls


def _spy(algorithm: Callable[..., Any], name: str, calls: Counter[str]) -> Callable[..., Any]:
    def spied(*args: Any, **kwargs: Any) -> Any:
        calls[name] += 1
        return algorithm(*args, **kwargs)

    return spied


def codes(text: str) -> list[str]:
    definition, diagnostics = check_source(text, "proof.proc")
    assert definition is not None, [d.message for d in diagnostics]
    return [d.code for d in diagnostics if d.code != "W207"]


@pytest.mark.parametrize(("proof", "algorithms", "broken", "code", "kept"), PROOFS, ids=[p[0] for p in PROOFS])
def test_each_proof_calls_networkx_and_finds_what_breaks_it(
    spies: Counter[str], proof: str, algorithms: tuple[str, ...], broken: str, code: str, kept: str
) -> None:
    assert codes(broken) == [code]
    for name in algorithms:
        assert spies[name] > 0, f"{proof}: networkx.{name} was not called"
    spies.clear()
    assert code not in codes(kept)
    for name in algorithms:
        if name != "strongly_connected_components":  # with every loop bounded there is no cycle to look for
            assert spies[name] > 0, f"{proof}: networkx.{name} was not called"


def test_the_parallel_branch_beside_a_read_is_named() -> None:
    text = next(broken for proof, _, broken, _, _ in PROOFS if "beside it" in proof)
    _, diagnostics = check_source(text, "proof.proc")
    assert [d.message for d in diagnostics if d.code == "E114"] == [
        "`answer` is bound in parallel branch `a`, which may not have finished here"
    ]


def test_which_nodes_a_run_reaches_is_networkx_descendants(spies: Counter[str]) -> None:
    text = process("  if input.ok {\n    step ask {\n      await ping as answer within 1h\n    }\n  }\n"
                   "  if answer.ok {\n    end\n  }\n")
    assert codes(text) == ["E114"]  # on some paths only: the binding edge's source is reached
    assert spies["descendants"] > 0


def test_a_wait_without_a_way_out_is_read_from_its_edges() -> None:
    endless = process("  step ask {\n    await ping\n  }\n  race r {\n    on pong {\n    }\n  }\n")
    assert codes(endless) == ["E117", "E117"]
    timed = process("  step ask {\n    await ping within 1h\n  }\n  race r {\n    on pong {\n    }\n    on timer 1h {\n    }\n  }\n")
    assert codes(timed) == []
    # `on timeout` draws a timeout edge, but without `within` nothing starts its clock.
    unclocked = process('  step ask {\n    await ping\n    on timeout fail "late"\n  }\n')
    assert codes(unclocked) == ["E117", "E133"]


# ---------------------------------------------------------------- flow comes from the graph only


def _pointing_nowhere(node: m.AnyNode) -> m.AnyNode:
    """The record with every field that names a target replaced by a node that does not exist."""
    nowhere = "no-such-node"
    if isinstance(node, m.StepNode):
        return dataclasses.replace(node, next=nowhere, failures={reply: nowhere for reply in node.failures},
                                   timeout_fail=nowhere if node.timeout_fail else None)
    if isinstance(node, m.XorNode):
        return dataclasses.replace(node, arms=tuple(dataclasses.replace(arm, target=nowhere) for arm in node.arms), default=nowhere)
    if isinstance(node, m.ForkNode):
        return dataclasses.replace(node, branches=tuple((name, nowhere) for name, _ in node.branches), join=nowhere)
    if isinstance(node, m.RaceNode):
        return dataclasses.replace(node, arms=tuple(dataclasses.replace(arm, target=nowhere) for arm in node.arms))
    if isinstance(node, m.LoopNode):
        return dataclasses.replace(node, body=nowhere)
    if isinstance(node, m.UntilNode):
        return dataclasses.replace(node, loop=nowhere, body=nowhere, next=nowhere)
    if isinstance(node, m.StartNode | m.JoinNode | m.CallNode):
        return dataclasses.replace(node, next=nowhere)
    return node


def _flow_from_the_graph_only(definition: m.ProcessDefinition) -> m.ProcessDefinition:
    graph = definition.graph.copy()
    nodes = {node_id: _pointing_nowhere(node) for node_id, node in definition.nodes.items()}
    for node_id, record in nodes.items():
        graph.nodes[node_id]["record"] = record
    blind = dataclasses.replace(definition, nodes=nodes)
    blind.__dict__["graph"] = graph  # the cached property, filled with the graph drawn from the true records
    return blind


def _texts() -> Iterator[tuple[str, str]]:
    for match in re.finditer(r"```proc\n(.*?)```", DOC, re.S):
        yield "docs", match[1]
    for path in sorted((ROOT / "tests" / "cases" / "validation").glob("*.proc")) + sorted((ROOT / "processes").glob("*.proc")):
        yield str(path), path.read_text(encoding="utf-8")
    for _, _, broken, _, kept in PROOFS:
        yield "proof", broken
        yield "proof", kept


def test_the_proofs_read_flow_only_from_the_graph() -> None:
    checked = 0
    for path, text in _texts():
        try:
            definition = compile_source(text, path if path.endswith(".proc") else "<text>",
                                        (lambda name: Path(name).read_bytes()) if path.endswith(".proc") else None)
        except SourceError:
            continue  # the document's examples of parse and compile errors
        assert validate(_flow_from_the_graph_only(definition)) == validate(definition), path
        checked += 1
    assert checked > 40

