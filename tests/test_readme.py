"""The README is the front door: its examples run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import procflow
from procflow.dsl.validate import check_source

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_has_the_two_commands() -> None:
    assert "make demo" in README and "make test" in README


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_examples_run(index: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    exec(compile(blocks("python")[index], f"README.md python block {index + 1}", "exec"), {"__name__": "readme"})


@pytest.mark.parametrize("index", range(len(blocks("proc"))))
def test_proc_examples_are_valid(index: int) -> None:
    definition, diagnostics = check_source(blocks("proc")[index], "README.proc")
    assert definition is not None
    assert [d for d in diagnostics if d.is_error] == []


@pytest.mark.parametrize("index", [i for i, block in enumerate(blocks("proc")) if "\nscenario " in block])
def test_proc_examples_scenarios_pass(index: int) -> None:
    """The language examples (recovery paths, retries, undo even on failure, deadline
    handlers, named ends) do what the README says: their scenarios pass."""
    from procflow.interpreter.simulate import check_scenario

    definition = procflow.load_text(blocks("proc")[index], "README.proc", scenarios=True)
    assert definition.scenarios
    for scenario in definition.scenarios:
        outcome = check_scenario(definition, scenario)
        assert outcome.passed, (scenario.name, outcome.differences)


def test_every_failure_construct_has_a_runnable_example() -> None:
    section = README.split("### When things fail", 1)[1].split("\n### ", 1)[0]
    examples = re.findall(r"```proc\n(.*?)```", section, flags=re.S)
    for construct in ("on card_declined as refusal {", "on timeout {", "retry 2 backoff", "even on timeout", "deadline 7d {", 'end "', "else {"):
        assert any(construct in example and "\nscenario " in example for example in examples), construct


def test_public_api_is_pinned() -> None:
    assert sorted(procflow.__all__) == sorted([
        "Command", "InMemoryStore", "InProcessTransport", "InputError", "InstanceState", "MessageRefused",
        "Orchestrator", "ProcessDefinition", "ProcflowError", "Reply", "SourceError", "SqliteStore", "Transition",
        "__version__", "advance", "deliver", "load", "load_text", "resume", "simulate", "start",
    ])
    for name in procflow.__all__:
        assert getattr(procflow, name) is not None


def _limits_table() -> list[list[str]]:
    section = README.split("## Limits", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [[cell.strip() for cell in row.strip().strip("|").split("|")] for row in rows]


def test_the_limits_table_in_the_readme_is_the_one_in_the_code() -> None:
    from procflow.limits import LIMITS

    table = _limits_table()
    assert [row[0] for row in table] == [f"`{limit.name}`" for limit in LIMITS], "one row per limit, in the table's order"
    for (name, value, bounds, change), limit in zip(table, LIMITS, strict=True):
        number = re.search(r"\d[\d,]*", value)
        assert number is not None and int(number.group().replace(",", "")) == limit.value, f"{name}: {value} is not {limit.value}"
        assert limit.unit in value, f"{name}: the value {value!r} does not say its unit ({limit.unit})"
        assert bounds == limit.bounds, f"{name}: the README says it bounds {bounds!r}; the code, {limit.bounds!r}"
        assert change == limit.change, f"{name}: the README says {change!r} about changing it; the code, {limit.change!r}"


def test_the_readme_and_docs_point_at_nothing_outside_the_repository() -> None:
    # The front door works offline and from a copy: addresses are this machine's services
    # (127.0.0.1, localhost) or names procflow itself uses as identifiers (procflow.dev).
    allowed = re.compile(r"https?://(127\.0\.0\.1|localhost|procflow\.dev)\b")
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for address in re.findall(r"https?://[^\s)>\]`\"']+", line):
                assert allowed.match(address), f"{path.name}:{number} points outside the repository: {address}"
