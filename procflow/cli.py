"""The `procflow` command line. Exit codes: 0 success, 1 the input is bad or a check failed, 2 usage,
70 a bug in procflow (said as such, without a traceback), 141 the reader of the output went away
(`procflow ... | head`: quietly, as a Unix filter stops on SIGPIPE), 130 interrupted.

Bad input never shows a traceback: every expected failure is a `ProcflowError` (or an OS
error on a file) and is printed as one clear message, its control characters escaped
(`procflow.terminal`): nothing a message or an id carries reaches the terminal raw.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

from procflow import __version__
from procflow.dsl import model as m
from procflow.dsl.diagnostics import Diagnostic
from procflow.dsl.diagnostics import render as render_diagnostic
from procflow.dsl.diagnostics import to_json as diagnostics_json
from procflow.dsl.paths import enumerate_paths, paths_json, paths_text
from procflow.dsl.validate import check_file
from procflow.errors import InputError, InstantError, ProcflowError, SourceError
from procflow.files import read_json_argument
from procflow.limits import INPUT_BYTES, STATE_BYTES
from procflow.operator_args import AMQP_PREFIX_ENV, add_operator_commands, amqp_prefix_option
from procflow.terminal import printable, printable_lines
from procflow.tool_commands import add_tool_commands

# The interpreter (pydantic, SQLite) and the diagrams (graphviz) are imported by the commands
# that use them: `validate`, `paths` and `graph` start without them.


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"procflow: usage error: {message}", file=sys.stderr)
        raise _Exit(2)


def _fail(message: str, code: int = 1) -> NoReturn:
    print(f"procflow: error: {printable(message)}", file=sys.stderr)
    raise _Exit(code)


def _limits(values: Sequence[str] | None) -> dict[str, int]:
    limits: dict[str, int] = {}
    for item in values or ():
        name, _, number = item.partition("=")
        if not number.isdigit():
            _fail(f"--limit takes NAME=NUMBER (e.g. participants=5), not `{item}`", 2)
        limits[name] = int(number)
    return limits


def _load(path: str, limits: dict[str, int] | None = None) -> m.ProcessDefinition:
    """A definition that has no errors, or print its diagnostics and exit 1."""
    definition, diagnostics, text = check_file(path, limits)
    errors = [d for d in diagnostics if d.is_error]
    if definition is None or errors:
        for diagnostic in errors or diagnostics:
            print(printable_lines(render_diagnostic(diagnostic, text or None)), file=sys.stderr)
        print(printable(f"procflow: {path} has {len(errors) or 1} error(s); fix them and try again"), file=sys.stderr)
        raise _Exit(1)
    return definition


# ---------------------------------------------------------------- commands


def cmd_validate(args: argparse.Namespace) -> int:
    """Check every file; print diagnostics; exit 1 when any file has an error."""
    limits = _limits(args.limit)
    every: list[Diagnostic] = []
    texts: dict[str, str] = {}
    for path in args.files:
        _, diagnostics, text = check_file(path, limits)
        every.extend(diagnostics)
        texts[path] = text
    errors = sum(1 for d in every if d.is_error)
    warnings = len(every) - errors
    if args.format == "json":
        print(diagnostics_json(every))
    else:
        for diagnostic in every:
            print(printable_lines(render_diagnostic(diagnostic, texts.get(diagnostic.file) or None)))
            print()
        files = len(args.files)
        if errors:
            print(f"{errors} error(s), {warnings} warning(s) in {files} file(s)")
        else:
            print(f"{files} file(s) valid" + (f", {warnings} warning(s)" if warnings else ""))
    if errors or (args.strict and warnings):
        return 1
    return 0




def cmd_run(args: argparse.Namespace) -> int:
    """Simulate one instance and print its trace (or the JSON document)."""
    from procflow.instants import instant_problem, parse_instant
    from procflow.interpreter.simulate import simulate

    definition = _load(args.file)
    input_data = read_json_argument(args.input, "--input", INPUT_BYTES, InputError) if args.input is not None else None
    if input_data is not None and not isinstance(input_data, dict):
        _fail("--input must be a JSON object, e.g. '{\"orderId\": \"ord_441\"}'")
    try:
        now = parse_instant(args.now) if args.now else None
    except InstantError as error:
        _fail(f"--now: {error}", 2)
    except ValueError:
        _fail(f"--now must be an ISO-8601 instant such as 2026-03-23T16:00:00Z, not `{args.now}`", 2)
    problem = instant_problem(now) if now is not None else None
    if problem:
        _fail(f"--now: {problem}", 2)
    if args.stop_at is not None and args.stop_at not in {s.name for s in definition.steps} | {
        n.name for n in definition.nodes.values() if isinstance(n, m.RaceNode)
    }:
        _fail(f"--stop-at: `{definition.name}` has no step `{args.stop_at}`", 2)
    if input_data is None and args.scenario is None:
        _fail("give --input JSON (or --scenario NAME, whose input is used)", 2)
    result = simulate(
        definition,
        workflow_id=args.workflow_id,
        input=input_data,
        start=now,
        scenario=args.scenario,
        stop_at=args.stop_at,
    )
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(printable_lines(result.trace_text()), end="")
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    """Run every scenario of every file; print a readable difference for each failure."""
    from procflow.interpreter.simulate import check_scenario

    failed = 0
    total = 0
    for path in args.files:
        definition = _load(path)
        if not definition.scenarios:
            print(f"{path}: no scenarios")
            continue
        for scenario in definition.scenarios:
            if args.scenario and scenario.name not in args.scenario:
                continue
            total += 1
            outcome = check_scenario(definition, scenario)
            if outcome.passed:
                print(printable(f"PASS  {path}::{scenario.name}"))
                continue
            failed += 1
            print(printable(f"FAIL  {path}::{scenario.name}"))
            for difference in outcome.differences:
                print("      " + printable_lines(difference).replace("\n", "\n      "))
            if outcome.result is not None:
                print("      trace:")
                for line in outcome.result.trace_text().rstrip().splitlines():
                    print("        " + printable(line))
    print(f"{total - failed} passed, {failed} failed")
    return 1 if failed else 0


def cmd_paths(args: argparse.Namespace) -> int:
    """The saga table: every path from start to an end, with its compensation."""
    definition = _load(args.file)
    paths = enumerate_paths(definition)
    if args.format == "json":
        print(json.dumps(paths_json(paths), indent=2))
    else:
        print(printable_lines(paths_text(paths)), end="")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The operator's console (`procflow.console_app`); its libraries are the `console` extra."""
    try:
        # FastAPI and uvicorn are an extra, imported only here.
        from procflow.console_app import serve
    except ImportError as missing:
        raise ProcflowError(f"procflow serve needs the console's libraries ({missing}); install them with `pip install 'procflow[console]'`") from None
    return serve(args)


def cmd_graph(args: argparse.Namespace) -> int:
    """The compiled graph in networkx node-link form."""
    definition = _load(args.file)
    print(json.dumps(m.graph_data(definition), indent=2, sort_keys=True))
    return 0


RENDER_SUFFIXES = {".svg": "svg", ".png": "png", ".mmd": "mermaid", ".mermaid": "mermaid", ".dot": "dot", ".gv": "dot"}
"""The format `procflow render -o FILE` writes when no --format is given, by the file's suffix."""


def cmd_render(args: argparse.Namespace) -> int:
    """Draw a process (or an instance of it)."""
    from procflow import visualize
    from procflow.operator_cli import instance_for_render

    definition = _load(args.file)
    instance = None
    if args.store:
        if not args.instance:
            _fail("--store needs --instance ID (the instance to draw)", 2)
        definition, instance = instance_for_render(args.store, args.instance, definition)
    elif args.instance:
        instance = read_json_argument("@" + args.instance, "--instance", STATE_BYTES, ProcflowError)
        if isinstance(instance, dict) and "state" in instance and isinstance(instance["state"], dict):
            instance = instance["state"]
        if not isinstance(instance, dict) or "workflowId" not in instance:
            _fail(f"--instance {args.instance} is not a state record (the `state` printed by `procflow run --json`)")
    options: dict[str, Any] = {"path_name": args.path, "instance": instance, "swimlanes": args.swimlanes,
                               "direction": args.direction, "expand": args.expand}
    if args.format is None:  # (`-o flow.png` asks for a PNG: DOT text in a .png file opens as nothing)
        args.format = RENDER_SUFFIXES.get(Path(args.output).suffix.lower(), "dot") if args.output else "dot"
    if args.format in ("dot", "mermaid"):
        text = visualize.render_text(definition, args.view, args.format, **options)
        if args.output:
            Path(args.output).write_text(text, encoding="utf-8")
        else:
            print(text, end="" if text.endswith("\n") else "\n")
        return 0
    if not args.output:
        _fail(f"--format {args.format} writes a binary image; give -o FILE", 2)
    image = visualize.render_image(definition, args.view, args.format, **options)
    Path(args.output).write_bytes(image)
    print(f"wrote {args.output}")
    return 0


def _bpmn(definition: m.ProcessDefinition, args: argparse.Namespace) -> str:
    from procflow.visualize.bpmn import bpmn_xml

    return bpmn_xml(definition)


def _mermaid_flow(definition: m.ProcessDefinition, args: argparse.Namespace) -> str:
    from procflow.visualize.render import mermaid_flow

    return mermaid_flow(definition)


def _asyncapi(definition: m.ProcessDefinition, args: argparse.Namespace) -> str:
    from procflow.asyncapi import asyncapi_text
    from procflow.interpreter.amqp_topology import DEFAULT_PREFIX

    return asyncapi_text(definition, args.amqp_prefix or os.environ.get(AMQP_PREFIX_ENV) or DEFAULT_PREFIX)


EXPORT_FORMATS: dict[str, Callable[[m.ProcessDefinition, argparse.Namespace], str]] = {
    "bpmn": _bpmn,
    "mermaid-flow": _mermaid_flow,
    "asyncapi": _asyncapi,
}
"""`procflow export --format F`: the function `definition -> text` that writes F; each imports
its module when it is used, so the other commands start without it."""


def cmd_export(args: argparse.Namespace) -> int:
    """Write a process in another tool's format: BPMN 2.0 XML, a Mermaid flowchart, AsyncAPI."""
    definition = _load(args.file)
    text = EXPORT_FORMATS[args.format](definition, args)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(printable(f"wrote {args.output}"))
    else:
        print(text, end="" if text.endswith("\n") else "\n")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    """The JSON Schema of a command, a reply or a state."""
    from procflow.interpreter.messages import Command, Reply
    from procflow.interpreter.state import InstanceState

    schemas = {"command": Command.model_json_schema, "reply": Reply.model_json_schema, "state": InstanceState.model_json_schema}
    print(json.dumps(schemas[args.kind](), indent=2))
    return 0


def _sample(name: str) -> Path:
    return Path(str(resources.files("procflow.processes").joinpath(name)))


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the embedded defaults: validate, run two paths, draw the diagrams."""
    from procflow import visualize
    from procflow.instants import parse_instant
    from procflow.interpreter.simulate import simulate

    path = str(_sample("order_fulfillment.proc"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"== validate {path}")
    definition = _load(path)
    _, diagnostics, _ = check_file(path)
    print(f"valid: {len(diagnostics)} finding(s)")
    order = {"orderId": "ord_441", "amount": 180.0}
    start = parse_instant("2026-03-23T16:00:00Z")
    print("\n== happy path: every participant says yes")
    happy = simulate(definition, workflow_id="wf_401", input=order, start=start)
    print(happy.trace_text(), end="")
    print("\n== failure path: shipping refuses the order, completed steps are undone in reverse")
    failure = simulate(definition, workflow_id="wf_402", input=order, start=start, scenario="shipping_rejected")
    print(failure.trace_text(), end="")
    (out / "happy.json").write_text(json.dumps(happy.to_json(), indent=2), encoding="utf-8")
    (out / "failure.json").write_text(json.dumps(failure.to_json(), indent=2), encoding="utf-8")
    print("\n== diagrams")
    written = []
    for view, fmt, name in (
        ("flow", "dot", "order_fulfillment-flow.dot"),
        ("sequence", "mermaid", "order_fulfillment-sequence.mmd"),
    ):
        (out / name).write_text(visualize.render_text(definition, view, fmt), encoding="utf-8")
        written.append(name)
    images: list[tuple[str, str, str | None, dict[str, Any] | None]] = [
        ("flow", "order_fulfillment-flow.svg", None, None),
        ("sequence", "order_fulfillment-sequence.svg", None, None),
        ("sequence", "order_fulfillment-sequence-compensation.svg", "create_shipment.shipment_rejected", None),
        ("flow", "order_fulfillment-instance.svg", None, failure.state.to_json()),
    ]
    try:
        for view, name, path_name, instance in images:
            (out / name).write_bytes(visualize.render_image(definition, view, "svg", path_name=path_name, instance=instance))
            written.append(name)
    except ProcflowError as error:
        print(f"images skipped: {error}")
    for name in written:
        print(f"wrote {out / name}")
    return 0


# ---------------------------------------------------------------- wiring


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `procflow` program."""
    parser = _Parser(prog="procflow", description="Write, check, see and run orchestrated business processes.")
    parser.add_argument("--version", action="version", version=f"procflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("validate", help="check .proc files; exit 1 when any has an error")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--limit", action="append", metavar="NAME=N", help="orchestrator-scope threshold, e.g. participants=5")
    p.add_argument("--strict", action="store_true", help="warnings fail too")
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("render", help="draw a process as a flow or sequence diagram")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--view", choices=("flow", "sequence"), default="flow")
    p.add_argument("--format", choices=("svg", "png", "dot", "mermaid"),
                   help="default: what the -o file's name ends with (.svg, .png, .mmd), else dot")
    p.add_argument("-o", "--output", metavar="OUT")
    p.add_argument("--path", metavar="NAME", help="sequence view of this path (see `procflow paths`)")
    p.add_argument("--instance", metavar="STATE.json", help="overlay an instance's state (with --store: an instance id)")
    p.add_argument("--store", metavar="PATH|URL", help="read the --instance ID from this store (a file path, or sqlite:///... or postgresql://...)")
    p.add_argument("--swimlanes", action="store_true", help="one lane per participant (flow view)")
    p.add_argument("--direction", choices=("auto", "lr", "tb"), default="auto",
                   help="flow view: left to right, top to bottom, or whichever fits a page (default)")
    p.add_argument("--expand", action="store_true", help="flow view: draw every block open, however large the process")
    p.set_defaults(handler=cmd_render)

    p = sub.add_parser("export", help="write a process for another tool: BPMN 2.0 (with its diagram), a Mermaid flowchart, AsyncAPI 3.0")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--format", choices=tuple(EXPORT_FORMATS), required=True)
    p.add_argument("-o", "--output", metavar="OUT", help="write to this file (default: standard output)")
    amqp_prefix_option(p)
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("run", help="simulate an instance with participants that reply as a scenario says")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--input", metavar="JSON", help="the instance's input (JSON text, or @file.json)")
    p.add_argument("--workflow-id", default="wf_1", metavar="ID")
    p.add_argument("--now", metavar="ISO-8601", help="where the virtual clock starts")
    p.add_argument("--stop-at", metavar="STEP", help="stop when the instance waits in this step")
    p.add_argument("--scenario", metavar="NAME")
    p.add_argument("--json", action="store_true", help="print one JSON document: state, commands, history")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("test", help="run the scenarios of .proc files")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--scenario", action="append", metavar="NAME", help="only these scenarios")
    p.set_defaults(handler=cmd_test)

    p = sub.add_parser("paths", help="every path from start to an end, with the compensation on it")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(handler=cmd_paths)

    p = sub.add_parser("graph", help="the compiled graph (networkx node-link JSON)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--format", choices=("json",), default="json")
    p.set_defaults(handler=cmd_graph)

    p = sub.add_parser("schema", help="JSON Schema of what participants exchange")
    p.add_argument("kind", choices=("command", "reply", "state"))
    p.set_defaults(handler=cmd_schema)

    p = sub.add_parser("demo", help="validate, run and draw the lesson's order process")
    p.add_argument("--out", default="out/demo", metavar="DIR")
    p.set_defaults(handler=cmd_demo)

    add_tool_commands(sub)
    p = sub.add_parser("serve", help="the operator's console in the browser: instances, diagrams, history, retry, API, metrics")
    p.add_argument("--store", help="a path or URL (else $PROCFLOW_STORE, else procflow.sqlite)")
    p.add_argument("--processes", metavar="DIR", help="a folder of .proc files the API may start instances of")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--token", help="the bearer token actions need (else $PROCFLOW_TOKEN); without one, actions are off")
    p.set_defaults(handler=cmd_serve)
    add_operator_commands(sub)
    return parser


EXIT_BUG = 70
"""A bug in procflow (EX_SOFTWARE): said in one line, with how to report it."""

EXIT_PIPE = 128 + 13
"""The reader of the output went away (SIGPIPE): what a shell reports for a filter it stopped."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `procflow` program."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        code: int = args.handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's own flush at exit
        return code
    except _Exit as done:
        return done.code
    except SourceError as error:
        for diagnostic in error.diagnostics:
            print(printable_lines(render_diagnostic(diagnostic, error.source or None)), file=sys.stderr)
        return 1
    except ProcflowError as error:
        print(f"procflow: error: {printable(str(error))}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return _reader_gone()
    except OSError as error:
        print(printable(f"procflow: error: {error.strerror or error}: {error.filename or ''}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # a bug: say so in one line, never with a traceback
        if os.environ.get("PROCFLOW_TRACEBACK"):
            raise
        print(
            printable(
                f"procflow: internal error (a bug in procflow {__version__}): {type(error).__name__}: {error}. "
                "Please report it with the command that caused it; set PROCFLOW_TRACEBACK=1 to see where it happened."
            ),
            file=sys.stderr,
        )
        return EXIT_BUG


def _reader_gone() -> int:
    """The output's reader closed the pipe (`procflow instances | head`): stop quietly. What
    is still buffered goes to /dev/null, so the interpreter's flush at exit cannot fail too."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass  # no file descriptor behind stdout (a test's capture): nothing will be flushed to a pipe
    return EXIT_PIPE


if __name__ == "__main__":
    sys.exit(main())
