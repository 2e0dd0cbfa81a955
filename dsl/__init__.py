"""The .proc language: parse, compile to a `ProcessDefinition` (and its graph), validate."""

from procflow.dsl.compiler import compile_source, load
from procflow.dsl.diagnostics import Diagnostic, Span
from procflow.dsl.model import ProcessDefinition
from procflow.dsl.parser import parse
from procflow.errors import ProcflowError, SourceError

__all__ = ["Diagnostic", "ProcessDefinition", "ProcflowError", "SourceError", "Span", "compile_source", "load", "parse"]
