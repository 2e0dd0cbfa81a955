"""Benchmark (not a test): parse, compile and validate generated processes of growing size.

Generates processes of 500, 5,000 and 50,000 steps (sequences with `if`/`else`, `switch`,
`parallel` blocks, races and bounded loops), times each stage, and prints the time per step
and the ratio per-step(largest) / per-step(smallest). The process must scale linearly:
the ratio is expected to stay at or below 1.5, and 500 steps to take at most 1.5 s in total
(Lark is the only parser: about 35 µs a token, most of the time).

    python bench/dsl_scale.py                 # 500, 5000, 50000
    python bench/dsl_scale.py 500 5000        # chosen sizes
    python bench/dsl_scale.py --profile 5000  # cProfile the stages, top 25 functions by own time

The sizes are measured in `--rounds` interleaved rounds (default 3), and each stage's
median counts. A size smaller than 5,000 steps is measured several times a round (5,000 /
size times: ten for 500 steps), so that every size is timed over about the same span of
the machine's time: this VM's speed drifts by a third over seconds, and the best of three
0.1-second runs would catch a fast moment that a 15-second run of 50,000 steps cannot, which
inflates the per-step ratio by chance. The best total of each size is printed too.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import re
import statistics
import sys
import time

from procflow.dsl.compiler import _Compiler
from procflow.dsl.model import ProcessDefinition
from procflow.dsl.parser import parse
from procflow.dsl.syntax import SourceFile
from procflow.dsl.validate import validate

PARTICIPANTS = ("inventory", "payment", "shipping", "billing", "crm")


def _step(index: int, indent: str) -> list[str]:
    participant = PARTICIPANTS[index % len(PARTICIPANTS)]
    bind = f" as r{index}" if index % 7 == 0 else ""
    return [
        f"{indent}step s{index} {{",
        f"{indent}  send {participant}.do{index % 13} {{ orderId: input.orderId, n: {index} }}",
        f"{indent}  await done{index}{bind} within 30s retry 2 backoff 5s x2",
        f"{indent}  on failed{index} fail \"step {index} failed\"",
        f"{indent}  compensate {participant}.undo{index % 13} {{ orderId: input.orderId }} awaiting undone{index} within 1m",
        f"{indent}}}",
    ]


def generate(steps: int) -> str:
    """A valid process with exactly `steps` steps and a mix of every kind of block."""
    lines = [
        "process scale-test {",
        "  correlate by input.orderId",
        '  reply to "scale-replies"',
        '  input { orderId: string, amount: number, kind: "a" | "b" | "c" }',
        "  deadline 30d",
    ]
    lines += [f'  participant {p} "{p.title()}"' for p in PARTICIPANTS]
    lines.append("  event ping { orderId: string }")
    made = 0
    block = 0
    while made < steps - 1:
        left = steps - 1 - made
        shape = block % 6
        block += 1
        if shape == 1 and left >= 2:
            lines.append("  if input.amount > 100 {")
            lines += _step(made, "    ")
            lines.append("  } else {")
            lines += _step(made + 1, "    ")
            lines.append("  }")
            made += 2
        elif shape == 2 and left >= 2:
            lines.append(f"  parallel p{block} {{")
            lines.append("    branch left {")
            lines += _step(made, "      ")
            lines.append("    }")
            lines.append("    branch right {")
            lines += _step(made + 1, "      ")
            lines.append("    }")
            lines.append("  }")
            made += 2
        elif shape == 3 and left >= 3:
            lines.append("  switch input.kind {")
            for offset, value in enumerate(("a", "b", "c")):
                lines.append(f'    case "{value}" {{')
                lines += _step(made + offset, "      ")
                lines.append("    }")
            lines.append("  }")
            made += 3
        elif shape == 4 and left >= 1:
            lines.append(f"  race w{block} {{")
            lines.append("    on ping as pinged {")
            lines += _step(made, "      ")
            lines.append("    }")
            lines.append("    on timer 1h {")
            lines.append("      end")
            lines.append("    }")
            lines.append("  }")
            made += 1
        elif shape == 5 and left >= 1:
            lines.append(f"  repeat l{block} max 3 {{")
            lines += _step(made, "    ")
            lines.append(f"  }} until steps.s{made}.reply == \"done{made}\"")
            made += 1
        else:
            lines += _step(made, "  ")
            made += 1
    # The last step undoes nothing, as a closing notification would not: the validator then
    # searches the whole graph for a failure that could follow it (W201), as in practice.
    lines += [line for line in _step(made, "  ") if "compensate" not in line]
    lines.append("}")
    return "\n".join(lines) + "\n"


def measure(steps: int) -> dict[str, float]:
    """Seconds spent parsing, compiling and validating one generated process."""
    text = generate(steps)
    started = time.perf_counter()
    source = parse(text, "<bench>")
    parsed = time.perf_counter()
    definition = compile_syntax(source)
    compiled = time.perf_counter()
    diagnostics = validate(definition)
    validated = time.perf_counter()
    if diagnostics:
        print(f"  note: {len(diagnostics)} diagnostics, first: {diagnostics[0].code} {diagnostics[0].message}")
    return {
        "parse": parsed - started,
        "compile": compiled - parsed,
        "validate": validated - compiled,
        "total": validated - started,
    }


def compile_syntax(source: SourceFile) -> ProcessDefinition:
    """Compile an already parsed file (what `compile_source` does after parsing)."""
    return _Compiler(source, None, (source.path,)).compile()


_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|[A-Za-z_][A-Za-z0-9_]*|[0-9][A-Za-z0-9.]*|==|!=|<=|>=|\S')


def _token_count(text: str) -> int:
    """Tokens in the text, about as the grammar's lexer splits it (the generated text has no
    comments, doc strings or hyphenated names aside from the process's)."""
    return len(_TOKEN.findall(text))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[500, 5000, 50000])
    parser.add_argument("--profile", action="store_true", help="profile each size with cProfile")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all sizes; each stage's median counts")
    args = parser.parse_args(argv)
    if args.profile:
        for size in args.sizes:
            profiler = cProfile.Profile()
            profiler.enable()
            measure(size)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return 0
    measure(200)  # warm up: build the parser once, outside the timings
    runs: dict[int, list[dict[str, float]]] = {size: [] for size in args.sizes}
    for _ in range(args.rounds):  # sizes interleaved, so a busy spell on the machine hits them all
        for size in args.sizes:
            for _ in range(max(1, 5000 // size)):
                runs[size].append(measure(size))
    print(f"{'steps':>7} {'tokens':>9} {'parse s':>9} {'compile s':>10} {'validate s':>11} {'total s':>9}"
          f" {'µs/step':>9} {'µs/token':>9} {'best total s':>13} {'runs':>5}")
    per_step: dict[int, float] = {}
    totals: dict[int, float] = {}
    for size in args.sizes:
        times = {stage: statistics.median(run[stage] for run in runs[size]) for stage in ("parse", "compile", "validate")}
        total = times["parse"] + times["compile"] + times["validate"]
        best = min(run["total"] for run in runs[size])
        tokens = _token_count(generate(size))
        per_step[size] = total / size
        totals[size] = total
        print(
            f"{size:>7} {tokens:>9} {times['parse']:>9.3f} {times['compile']:>10.3f}"
            f" {times['validate']:>11.3f} {total:>9.3f} {per_step[size] * 1e6:>9.1f}"
            f" {total / tokens * 1e6:>9.2f} {best:>13.3f} {len(runs[size]):>5}"
        )
    ok = True
    smallest, largest = min(per_step), max(per_step)
    if smallest != largest:
        ratio = per_step[largest] / per_step[smallest]
        verdict = "ok" if ratio <= 1.5 else "MISSED (target <= 1.5)"
        ok &= ratio <= 1.5
        print(f"per-step({largest}) / per-step({smallest}) = {ratio:.2f}  {verdict}")
    if 500 in totals:
        verdict = "ok" if totals[500] <= 1.5 else "MISSED (target <= 1.5 s)"
        ok &= totals[500] <= 1.5
        print(f"500 steps: {totals[500]:.3f} s  {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
