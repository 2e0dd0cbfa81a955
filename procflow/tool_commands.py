"""The commands for people who write .proc files by hand: `procflow fmt` (the canonical
layout, see `dsl/formatter.py`) and `procflow lsp` (the language server, `procflow/lsp.py`,
imported only when it runs: pygls is not needed by any other command).
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from procflow.dsl.compiler import read_source
from procflow.dsl.diagnostics import render
from procflow.dsl.formatter import format_text
from procflow.dsl.source import decode_source
from procflow.errors import ProcflowError, SourceError
from procflow.terminal import printable, printable_lines


def add_tool_commands(sub: Any) -> None:
    """Register `fmt` and `lsp` on the `procflow` parser (its `add_subparsers()` object)."""
    p = sub.add_parser("fmt", help="write .proc files in their canonical layout, comments kept")
    p.add_argument("files", nargs="+", metavar="FILE", help="files to format (`-`: read standard input, write standard output)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 when a file would change")
    p.add_argument("--diff", action="store_true", help="write nothing; print what would change as a unified diff")
    p.set_defaults(handler=cmd_fmt)

    p = sub.add_parser("lsp", help="run the language server for editors (speaks LSP on standard input and output)")
    p.set_defaults(handler=cmd_lsp)


def cmd_fmt(args: argparse.Namespace) -> int:
    """Format each file in place (or check it, or show the difference). Exit 1 when a file
    does not parse (it is left as it is) or, with `--check`, when one would change."""
    failed = changed = 0
    for path in args.files:
        try:
            text = sys.stdin.read() if path == "-" else decode_source(read_source(path), path)
            formatted = format_text(text, "<stdin>" if path == "-" else path)
        except SourceError as error:
            for diagnostic in error.diagnostics:
                print(printable_lines(render(diagnostic, error.source or None)), file=sys.stderr)
            print(printable(f"procflow: {path} was left as it is: it does not parse"), file=sys.stderr)
            failed += 1
            continue
        except OSError as error:
            print(printable(f"procflow: error: cannot read {path}: {error.strerror or error}"), file=sys.stderr)
            failed += 1
            continue
        if path == "-" and not (args.check or args.diff):
            sys.stdout.write(formatted)
            continue
        if formatted == text:
            continue
        changed += 1
        if args.diff:
            sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), formatted.splitlines(True), f"{path} (as it is)", f"{path} (formatted)"))
        if args.check:
            print(printable(f"would reformat {path}"), file=sys.stderr)
        elif not args.diff:
            _replace(Path(path), formatted)
            print(printable(f"reformatted {path}"), file=sys.stderr)
    if failed or (args.check and changed):
        return 1
    return 0


def _replace(path: Path, text: str) -> None:
    """Write the file whole or not at all: a new file beside it, then renamed over it (its
    permission bits kept), so an interrupted run never leaves half a process."""
    path = path.resolve()  # a symlink keeps pointing at the formatted file
    mode = path.stat().st_mode & 0o7777
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".fmt")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def cmd_lsp(args: argparse.Namespace) -> int:
    """Serve the Language Server Protocol on standard input and output until the editor stops it."""
    try:
        from procflow.lsp import serve
    except ImportError as missing:
        raise ProcflowError(
            f"the language server needs pygls, which is not installed ({missing.name}): pip install 'procflow[lsp]'"
        ) from None
    serve()
    return 0
