"""The library carries no speed tricks (issue 12): every record is built by its constructor,
no code is generated, the garbage collector is the host's, and nothing is cached by `id()`.

A trick may come back only with a benchmark showing a user-visible gain of 20% or more; this
test is where it would have to be argued for, by name.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_FOLDERS = ("procflow", "dsl", "interpreter", "visualize")


def _modules() -> list[Path]:
    found = [module for folder in PACKAGE_FOLDERS for module in sorted((ROOT / folder).glob("*.py"))]
    assert len(found) > 40  # the walk really reads the package
    return found


def _calls(tree: ast.AST) -> list[str]:
    """Every called name as written: `object.__new__`, `exec`, `gc.freeze`, `id`..."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            names.append(ast.unparse(node.func))
    return names


def test_no_module_builds_records_around_their_constructor_or_generates_code() -> None:
    for module in _modules():
        calls = _calls(ast.parse(module.read_text(encoding="utf-8")))
        for banned in ("object.__new__", "tuple.__new__", "exec", "eval", "compile"):
            assert banned not in calls, f"{module.relative_to(ROOT)} calls {banned}"
        assert not [c for c in calls if c.startswith("gc.")], f"{module.relative_to(ROOT)} drives the garbage collector"


def test_nothing_is_keyed_by_id() -> None:
    for module in _modules():
        assert "id" not in _calls(ast.parse(module.read_text(encoding="utf-8"))), f"{module.relative_to(ROOT)} calls id()"


def test_the_fast_reader_and_the_generated_inits_are_gone() -> None:
    assert not (ROOT / "dsl" / "reader.py").exists()
    assert not (ROOT / "dsl" / "quick.py").exists()
    assert not (ROOT / "interpreter" / "make.py").exists()


def test_the_check_sees_a_trick_when_there_is_one() -> None:
    tree = ast.parse("made = object.__new__(Wait)\ncache[id(definition)] = 1\nexec(template)\ngc.freeze()\n")
    assert {"object.__new__", "id", "exec", "gc.freeze"} <= set(_calls(tree))
