"""No input makes the checker raise or hang: every sample process, mangled by hypothesis
(spans deleted, duplicated and swapped, random bytes with NUL and non-UTF-8, truncation,
deep brackets, huge input), gives diagnostics and nothing else, quickly."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from procflow.dsl.diagnostics import Diagnostic
from procflow.dsl.validate import check_file, check_source

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "processes").glob("*.proc"))
SOURCES = [path.read_bytes() for path in SAMPLES]
SECONDS_PER_INPUT = 10.0
"""Generous for a slow CI machine: a sample is checked in well under a second."""


@st.composite
def mutation(draw: st.DrawFn, data: bytes) -> bytes:
    """One edit of the bytes."""
    size = len(data)
    start = draw(st.integers(0, size))
    end = draw(st.integers(start, min(size, start + 400)))
    kind = draw(st.sampled_from(["delete", "duplicate", "swap", "insert", "truncate", "nest", "grow", "chain"]))
    if kind == "delete":
        return data[:start] + data[end:]
    if kind == "duplicate":
        return data[:end] + data[start:end] + data[end:]
    if kind == "swap":
        other = draw(st.integers(0, size))
        first, second = sorted((start, other))
        return data[:first] + data[second : second + (end - start)] + data[first + (end - start) : second] + data[first:]
    if kind == "insert":
        noise = draw(st.one_of(
            st.binary(max_size=40),
            st.sampled_from([b"\x00", b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"'", b'"', b'"""', b"{", b"}", b"->", b"#"]),
            st.text(max_size=20).map(lambda s: s.encode("utf-8")),
        ))
        return data[:start] + noise + data[start:]
    if kind == "truncate":
        return data[:start]
    if kind == "nest":
        depth = draw(st.integers(1, 200))
        opener, closer = draw(st.sampled_from([(b"(", b")"), (b"[", b"]"), (b"{", b"}"), (b"step x {", b"}")]))
        return data[:start] + opener * depth + data[start:end] + closer * draw(st.integers(0, depth)) + data[end:]
    if kind == "grow":
        return data[:end] + data[start:end] * draw(st.integers(2, 30)) + data[end:]
    chain = draw(st.sampled_from([b" + 1", b".a", b" or true", b" not", b"-"])) * draw(st.integers(10, 3000))
    return data[:start] + chain + data[start:]


@st.composite
def mangled(draw: st.DrawFn) -> bytes:
    data = draw(st.sampled_from(SOURCES))
    for _ in range(draw(st.integers(1, 4))):
        data = draw(mutation(data))
    return data


def _assert_only_diagnostics(found: list[Diagnostic]) -> None:
    for diagnostic in found:
        assert isinstance(diagnostic, Diagnostic)
        assert diagnostic.code[0] in "EW" and diagnostic.span.line >= 1 and diagnostic.span.column >= 1
        assert diagnostic.message


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=mangled())
def test_mangled_samples_give_diagnostics_never_exceptions(data: bytes, tmp_path_factory: object) -> None:
    started = time.perf_counter()
    text = data.decode("utf-8", errors="replace")
    _, found = check_source(text, "mangled.proc")
    _assert_only_diagnostics(found)
    assert time.perf_counter() - started < SECONDS_PER_INPUT


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                HealthCheck.function_scoped_fixture])
@given(data=mangled())
def test_mangled_files_give_diagnostics_never_exceptions(data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "mangled.proc"
    path.write_bytes(data)
    started = time.perf_counter()
    _, found, _ = check_file(path)
    _assert_only_diagnostics(found)
    assert time.perf_counter() - started < SECONDS_PER_INPUT


def test_samples_exist() -> None:
    assert SOURCES


def test_huge_input_is_checked_quickly() -> None:
    text = SOURCES[0].decode("utf-8")
    body = text[text.index("{") + 1 : text.index("\n}")]
    huge = "process huge {" + body * 1 + "".join(
        f"\n  step extra_{i} {{\n    send inventory.reserve {{ orderId: input.orderId }}\n    await reserved_{i} within 1m\n  }}"
        for i in range(2000)
    ) + "\n}\n"
    started = time.perf_counter()
    _, found = check_source(huge, "huge.proc")
    _assert_only_diagnostics(found)
    assert time.perf_counter() - started < 30.0


def test_the_command_line_never_shows_a_traceback(tmp_path: Path) -> None:
    order = (ROOT / "processes" / "order_fulfillment.proc").read_bytes()
    cases = {
        "truncated.proc": order[: len(order) // 2],
        "binary.proc": b"\x00\x01\x02process",
        "latin1.proc": order.replace(b"Inventory", b"Inventaire \xe9"),
        "nested.proc": order.replace(b"input.orderId }", b"(" * 100 + b"input.orderId" + b")" * 100 + b" }", 1),
        "chain.proc": order.replace(b"input.amount }", b"input.amount" + b" + 1" * 2000 + b" }", 1),
        "empty.proc": b"",
    }
    assert all(data != order for data in cases.values())
    paths = []
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        paths.append(str(path))
    for path in paths:
        result = subprocess.run(
            [sys.executable, "-m", "procflow.cli", "validate", path], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 1, (path, result.stdout, result.stderr)
        assert "Traceback" not in result.stdout + result.stderr
        assert "error[E" in result.stdout + result.stderr
