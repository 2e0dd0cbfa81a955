"""procflow: write, check, see and run orchestrated business processes.

The embedding API, in the order a service uses it::

    definition = procflow.load("order_fulfillment.proc")           # or load_text(text)
    step = procflow.start(definition, "wf_401", {"orderId": "ord_441", "amount": 180.0}, now)
    step = procflow.deliver(definition, step.state, procflow.Reply(...), now)
    step = procflow.advance(definition, step.state, later)           # timers, timeouts, retries
    step.state, step.commands                                        # the record, what to send

or let an `Orchestrator` keep the state, send the commands and fire the timers.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from procflow.dsl.compiler import compile_source as load_text
    from procflow.dsl.compiler import load
    from procflow.dsl.model import ProcessDefinition
    from procflow.errors import InputError, MessageRefused, ProcflowError, SourceError
    from procflow.interpreter.engine import Transition, advance, deliver, resume, start
    from procflow.interpreter.memory_store import InMemoryStore
    from procflow.interpreter.messages import Command, Reply
    from procflow.interpreter.orchestrator import InProcessTransport, Orchestrator
    from procflow.interpreter.simulate import simulate
    from procflow.interpreter.sqlite_store import SqliteStore
    from procflow.interpreter.state import InstanceState


def _from_the_source_tree() -> None:
    """Find `procflow.dsl`, `.interpreter`, `.visualize` and `.processes` in the repository's
    top-level folders when this package is imported from the repository itself.

    The installation maps those folders under `procflow` (pyproject's `package-dir`). Python
    run in the repository's root (`python -m procflow`, `python -c "import procflow"`) finds
    this folder before the installed package, and without this would then miss its
    subpackages: so, when the folders beside this one are procflow's own, they are searched
    too. An installed package has no such neighbours and is left as it is."""
    root = Path(__file__).resolve().parent.parent
    if str(root) in __path__:
        return
    if (root / "pyproject.toml").is_file() and all((root / name / "__init__.py").is_file() for name in _SOURCE_FOLDERS):
        __path__.append(str(root))


_SOURCE_FOLDERS = ("dsl", "interpreter", "visualize", "processes")
_from_the_source_tree()

# Each name is imported on first use (PEP 562): `import procflow.dsl.validate`, or a command
# that only reads processes, does not pay for the interpreter, pydantic and SQLite.
_WHERE = {
    "load_text": ("procflow.dsl.compiler", "compile_source"),
    "load": ("procflow.dsl.compiler", "load"),
    "InputError": ("procflow.errors", "InputError"),
    "MessageRefused": ("procflow.errors", "MessageRefused"),
    "ProcflowError": ("procflow.errors", "ProcflowError"),
    "SourceError": ("procflow.errors", "SourceError"),
    "ProcessDefinition": ("procflow.dsl.model", "ProcessDefinition"),
    "Transition": ("procflow.interpreter.engine", "Transition"),
    "advance": ("procflow.interpreter.engine", "advance"),
    "deliver": ("procflow.interpreter.engine", "deliver"),
    "resume": ("procflow.interpreter.engine", "resume"),
    "start": ("procflow.interpreter.engine", "start"),
    "Command": ("procflow.interpreter.messages", "Command"),
    "Reply": ("procflow.interpreter.messages", "Reply"),
    "InMemoryStore": ("procflow.interpreter.memory_store", "InMemoryStore"),
    "InProcessTransport": ("procflow.interpreter.orchestrator", "InProcessTransport"),
    "Orchestrator": ("procflow.interpreter.orchestrator", "Orchestrator"),
    "simulate": ("procflow.interpreter.simulate", "simulate"),
    "SqliteStore": ("procflow.interpreter.sqlite_store", "SqliteStore"),
    "InstanceState": ("procflow.interpreter.state", "InstanceState"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _WHERE[name]
    except KeyError:
        raise AttributeError(f"module 'procflow' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # once imported, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})


__version__ = "0.1.0"

__all__ = [
    "Command",
    "InMemoryStore",
    "InProcessTransport",
    "InputError",
    "InstanceState",
    "MessageRefused",
    "Orchestrator",
    "ProcessDefinition",
    "ProcflowError",
    "Reply",
    "SourceError",
    "SqliteStore",
    "Transition",
    "__version__",
    "advance",
    "deliver",
    "load",
    "load_text",
    "resume",
    "simulate",
    "start",
]
