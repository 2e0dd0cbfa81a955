"""procflow: write, check, see and run orchestrated business processes.

The embedding API, in the order a service uses it::

    definition = procflow.load("order_fulfillment.proc")           # or load_text(text)
    step = procflow.start(definition, "wf_401", {"orderId": "ord_441", "amount": 180.0}, now)
    step = procflow.deliver(definition, step.state, procflow.Reply(...), now)
    step = procflow.advance(definition, step.state, later)           # timers, timeouts, retries
    step.state, step.commands                                        # the record, what to send

or let an `Orchestrator` keep the state, send the commands and fire the timers.
"""

from procflow.dsl.compiler import compile_source as load_text
from procflow.dsl.compiler import load
from procflow.dsl.errors import InputError, MessageRefused, ProcflowError, SourceError
from procflow.dsl.model import ProcessDefinition
from procflow.interpreter.engine import Transition, advance, deliver, resume, start
from procflow.interpreter.messages import Command, Reply
from procflow.interpreter.runtime import InMemoryStore, InProcessTransport, Orchestrator
from procflow.interpreter.simulate import simulate
from procflow.interpreter.sqlite_store import SqliteStore
from procflow.interpreter.state import InstanceState

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
