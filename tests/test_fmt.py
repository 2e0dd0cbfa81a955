"""`procflow fmt`: one canonical layout, comments kept where they were, idempotent, and the
compiled process unchanged (issue 19, must-show 1: every sample and every test fixture)."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from procflow.cli import main
from procflow.dsl import model as m
from procflow.dsl.compiler import compile_source, file_loader
from procflow.dsl.formatter import format_text
from procflow.dsl.parser import parse

sys.path.insert(0, str(Path(__file__).resolve().parent))
from syntax_shape import without_spans  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FILES = sorted([*ROOT.glob("processes/*.proc"), *ROOT.glob("tests/cases/**/*.proc")])
COMMENT = re.compile(r'"""[\s\S]*?"""|"[^"\\\n]*(?:\\.[^"\\\n]*)*"|(#[^\n]*)')


def _comments(text: str) -> list[str]:
    return sorted(match.group(1).rstrip() for match in COMMENT.finditer(text) if match.group(1))


def _graph(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, object, object]:
    """`procflow graph --format json` of the file: its exit code and its graph, and the graph
    it prints when the validator lets it (a fixture with a finding is refused)."""
    code = main(["graph", str(path), "--format", "json"])
    out = capsys.readouterr().out
    text = path.read_text(encoding="utf-8")
    compiled = m.graph_data(compile_source(text, str(path), file_loader(str(path)), scenarios=True))
    printed = json.loads(out) if code == 0 else {"nodes": []}
    return code, printed if code == 0 else out, compiled


def test_every_sample_and_fixture_is_found() -> None:
    assert len([path for path in FILES if path.parent.name == "processes"]) >= 7
    assert any("cases" in path.parts for path in FILES)


@pytest.mark.parametrize("original", FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_fmt_is_idempotent_and_keeps_the_graph_and_the_comments(
    original: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A copy of the file's whole folder: called processes and input schemas are read beside it.
    folder = tmp_path / "copy"
    shutil.copytree(original.parent, folder)
    path = folder / original.name
    before_text = path.read_text(encoding="utf-8")
    graph_before = _graph(path, capsys)

    assert main(["fmt", str(path)]) == 0
    capsys.readouterr()
    formatted = path.read_text(encoding="utf-8")
    assert main(["fmt", "--check", str(path)]) == 0, "a second run would change the file"
    assert main(["fmt", str(path)]) == 0
    assert path.read_text(encoding="utf-8") == formatted

    assert _graph(path, capsys) == graph_before
    assert _comments(formatted) == _comments(before_text)
    if graph_before[0] == 0 and original.parent.name == "processes":
        assert main(["test", str(path)]) == 0, "the scenarios no longer pass once formatted"


LAYOUT_IN = """\
# The header comment stays on top.
process   demo {
  correlate by input.id   # the business key
  participant shop "Shop"
  step   pay { await paid within 1h  # an hour at most
   send shop.pay {
      id: input.id,   # which order
      # the amount, as ordered
      amount: input.amount
   }
   # before the closing brace
  }


  # on its own, before the second step
  step ship { send shop.ship   await shipped }
}
# after the process
scenario happy { input { id: "1", amount: 2 } expect status completed }
# at the very end
"""

LAYOUT_OUT = """\
# The header comment stays on top.
process demo {
  correlate by input.id  # the business key
  participant shop "Shop"

  step pay {
    # the amount, as ordered
    send shop.pay { id: input.id, amount: input.amount }  # which order
    await paid within 1h  # an hour at most
    # before the closing brace
  }

  # on its own, before the second step
  step ship {
    send shop.ship
    await shipped
  }
}

# after the process
scenario happy {
  input { id: "1", amount: 2 }
  expect status completed
}
# at the very end
"""


def test_the_canonical_layout_puts_each_comment_beside_what_it_stood_beside() -> None:
    assert format_text(LAYOUT_IN) == LAYOUT_OUT
    assert format_text(LAYOUT_OUT) == LAYOUT_OUT


def test_an_empty_block_is_one_line_unless_a_comment_stands_inside_it() -> None:
    text = "process p {\n  if input.x { } else {\n  # not decided yet\n  }\n  parallel { branch a { } branch b {} }\n}\n"
    expected = (
        "process p {\n  if input.x {} else {\n    # not decided yet\n  }\n"
        "  parallel {\n    branch a {}\n    branch b {}\n  }\n}\n"
    )
    assert format_text(text) == expected
    assert format_text(expected) == expected


def test_a_line_too_wide_is_broken_an_entry_a_line() -> None:
    text = 'process p {\n  participant s "S"\n  step a { send s.go { ' + ", ".join(f"field{n}: input.value{n}" for n in range(8)) + " } }\n}\n"
    formatted = format_text(text)
    assert "    send s.go {\n      field0: input.value0,\n" in formatted
    assert "      field7: input.value7\n    }\n" in formatted
    assert max(len(line) for line in formatted.splitlines()) <= 100
    assert format_text(formatted) == formatted


def test_check_and_diff_write_nothing_and_say_what_would_change(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.proc"
    path.write_text(LAYOUT_IN, encoding="utf-8")
    assert main(["fmt", "--check", str(path)]) == 1
    assert f"would reformat {path}" in capsys.readouterr().err
    assert main(["fmt", "--diff", str(path)]) == 0
    diff = capsys.readouterr().out
    assert "-process   demo {" in diff and "+process demo {" in diff
    assert path.read_text(encoding="utf-8") == LAYOUT_IN
    assert main(["fmt", str(path)]) == 0
    assert path.read_text(encoding="utf-8") == LAYOUT_OUT


def test_a_file_that_does_not_parse_is_left_as_it_is(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.proc"
    broken.write_text("process p {\n  step a { sendd }\n}\n", encoding="utf-8")
    good = tmp_path / "good.proc"
    good.write_text(LAYOUT_IN, encoding="utf-8")
    assert main(["fmt", str(broken), str(good)]) == 1
    err = capsys.readouterr().err
    assert f"{broken}:2:12: error[E003]: unexpected `sendd`" in err
    assert "Traceback" not in err
    assert broken.read_text(encoding="utf-8") == "process p {\n  step a { sendd }\n}\n"
    assert good.read_text(encoding="utf-8") == LAYOUT_OUT  # the other files are still formatted


def test_a_missing_file_is_said_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fmt", str(tmp_path / "nowhere.proc")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_the_pre_commit_hooks_run_validate_and_fmt_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8")
    hooks = dict(zip(re.findall(r"^- id: (\S+)$", text, re.M), re.findall(r"^  entry: (.+)$", text, re.M), strict=True))
    assert hooks == {"procflow-validate": "procflow validate", "procflow-fmt": "procflow fmt --check"}
    assert text.count(r"files: \.proc$") == 2
    unformatted = tmp_path / "p.proc"
    unformatted.write_text(LAYOUT_IN, encoding="utf-8")
    formatted = tmp_path / "order.proc"  # valid, and in its canonical layout
    formatted.write_text(format_text((ROOT / "processes" / "order_fulfillment.proc").read_text(encoding="utf-8")), encoding="utf-8")
    for entry in hooks.values():
        program, *arguments = entry.split()
        assert program == "procflow"
        assert main([*arguments, str(formatted)]) == 0
    assert main([*hooks["procflow-fmt"].split()[1:], str(unformatted)]) == 1
    capsys.readouterr()


SAMPLE_TEXTS = [path.read_text(encoding="utf-8") for path in sorted(ROOT.glob("processes/*.proc"))]


@st.composite
def _commented(draw: st.DrawFn) -> str:
    """A sample with comments put at random places: on lines of their own and after code."""
    lines = draw(st.sampled_from(SAMPLE_TEXTS)).split("\n")
    for number in range(draw(st.integers(1, 6))):
        where = draw(st.integers(0, len(lines) - 1))
        if draw(st.booleans()):
            lines[where] += f"  # after {number}"
        else:
            indent = draw(st.sampled_from(["", "  ", "    "]))
            lines.insert(where, f"{indent}# alone {number}")
    return "\n".join(lines)


@given(_commented())
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_comments_anywhere_are_kept_and_the_layout_is_a_fixed_point(text: str) -> None:
    formatted = format_text(text)
    assert format_text(formatted) == formatted
    assert _comments(formatted) == _comments(text)
    assert without_spans(parse(formatted)) == without_spans(parse(text))
