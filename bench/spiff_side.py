"""SpiffWorkflow side of the procflow benchmark (order fulfillment saga).

(Why one module of about 600 lines: it has one job, the SpiffWorkflow half of
``compare.py``, kept whole so that everything done on that side can be read and
checked in one place; a sixth of it is ``SPIFF_LIMITATIONS``, the text that
``compare.py`` prints, and ``main`` at the end runs this side alone.)

Plain functions, no procflow imports.  The benchmark calls them to compare
SpiffWorkflow 3 (the "spiff" BPMN flavour, ``SpiffBpmnParser``) with procflow
on the same process: ``bench/order_fulfillment.bpmn`` is the BPMN twin of
``processes/order_fulfillment.proc``.

The functions play the part of an *embedding service*, because SpiffWorkflow
is a library, not a server:

* a command is a BPMN send task; its message has no catcher inside the
  workflow, so SpiffWorkflow queues it and the service takes it out with
  ``workflow.get_events()`` (that is the "send to participant" moment);
* the workflow then parks on an event-based gateway (success reply, failure
  reply, timeout timer);
* the participant's reply comes back as
  ``workflow.send_event(BpmnEvent(MessageEventDefinition(name), payload))``,
  followed by ``workflow.do_engine_steps()`` which runs until the next park.

Public functions (see each docstring):

    parse_once(validate=True) -> BpmnProcessSpec
    load_spec() -> BpmnProcessSpec
    run_happy(spec) -> RunResult
    run_failure(spec) -> RunResult                  (.undo is the undo order)
    run_happy_serialized(spec) -> RunResult
    run_failure_serialized(spec) -> RunResult
    run_timeout(spec) -> RunResult                  (extra: retry loop check)
    linear_bpmn(n) -> str
    linear_spec(n) -> BpmnProcessSpec
    run_linear(spec, n, deep=True) -> int
    deep_process_support()                          (context manager)
    park_instances(spec, count) -> list[BpmnWorkflow]
    serialize(workflow) -> str / deserialize(text) -> BpmnWorkflow

Run ``python bench/spiff_side.py`` for the self-check and timings.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
import tracemalloc
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Mapping

from SpiffWorkflow.bpmn import BpmnEvent, BpmnWorkflow
from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.specs.event_definitions.multiple import MultipleEventDefinition
from SpiffWorkflow.bpmn.specs.event_definitions.timer import TimerEventDefinition
from SpiffWorkflow.spiff.parser.process import VALIDATOR, SpiffBpmnParser
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG
from SpiffWorkflow.spiff.specs.event_definitions import MessageEventDefinition
from SpiffWorkflow.bpmn.util.task import BpmnTaskIterator
from SpiffWorkflow.util.task import TaskIterator, TaskState

# --------------------------------------------------------------------------- constants

BPMN_PATH = Path(__file__).with_name("order_fulfillment.bpmn")
PROCESS_ID = "order_fulfillment"

#: The input of the ``happy_path`` scenario of order_fulfillment.proc.
DEFAULT_INPUT = {"orderId": "ord_441", "amount": 180.0}

#: Replies each participant gives when everything goes well.
HAPPY_REPLIES = {
    "inventory.reserve": "inventory_reserved",
    "payment.authorize": "payment_authorized",
    "shipping.create": "shipment_created",
}

#: Inventory and payment succeed, shipping refuses; the undo commands are acknowledged.
FAILURE_REPLIES = {
    "inventory.reserve": "inventory_reserved",
    "payment.authorize": "payment_authorized",
    "shipping.create": "shipment_rejected",
    "payment.void": "payment_voided",
    "inventory.release": "inventory_released",
}

#: Commands that undo a completed step (the ``compensate`` lines of the .proc).
UNDO_COMMANDS = ("payment.void", "inventory.release")

#: BPMN ids of the catch events that stand for a participant's reply.
REPLY_EVENT_IDS = frozenset(
    ["inventory_reserved", "inventory_unavailable", "inventory_released",
     "payment_authorized", "payment_declined", "payment_voided",
     "shipment_created", "shipment_rejected"]
)

#: End event id -> instance status.
END_STATUS = {
    "order_completed": "completed",
    "order_failed": "failed",
    "compensation_failed": "compensation_failed",
}

SPIFF_LIMITATIONS = """\
What SpiffWorkflow 3 (3.2.0, spiff flavour) could not model directly, and what stands in for it:
1. Compensation. The parser rejects a compensation boundary event
   (NotImplementedError "Unsupported Catch Event"); a compensation throw event
   is parsed as a plain none event that does nothing, and isForCompensation
   activities are dropped. The undo handlers are therefore explicit steps of a
   reversed chain (void payment -> release inventory): a failure at step k
   enters the chain at the undo of step k-1. The chain is fixed at design
   time per failure point instead of being derived from what actually ran.
2. Retry and backoff ("within 30s retry 2 backoff 5s", "retry 3" on the
   undo commands). No native construct: each is a loop made of a timer on the
   event-based gateway, an exclusive gateway on an attempt counter (a
   spiffworkflow:preScript on the send task increments it), a backoff timer and
   a join gateway before the send task.
3. Timers fire only when the embedding service polls: SpiffWorkflow has no
   clock or scheduler; the service must call workflow.refresh_timers() (or
   do_engine_steps()) periodically and find the parked instances itself.
4. Durability, instance lookup and correlation are left to the embedding
   service: there is no instance store. The harness holds the workflow object
   (or its JSON); routing a reply to the instance of an orderId is the
   service's dictionary lookup, not BPMN correlation. Each JSON snapshot from
   BpmnWorkflowSerializer also embeds the whole process spec.
5. Commands are BPMN messages that leave the workflow (send task, collected
   with workflow.get_events()); there is no notion of a participant's command
   contract or reply channel ("reply to workflow-replies"), and no
   at-least-once/idempotence support for re-sent commands.
6. A failure ("fail <reason>") is a script task setting failure_reason plus an
   end event; the instance's outcome is read from which end event completed
   (a BPMN error end event at top level would just be queued as an uncaught
   event, not fail the instance).
7. Long sequential processes. The parser follows sequence flows recursively and
   the task tree is predicted recursively, so past ~160 steps Python's default
   recursion limit (1000) is exceeded; and the task iterators stop at
   max_depth=1000 tree levels, so on a 1000-step process do_engine_steps() no
   longer sees the READY tasks past step 500 and is_completed() wrongly answers
   True. The linear benchmark runs inside deep_process_support(), which raises
   the recursion limit and lifts the iterators' default max_depth. Each engine
   step also walks the whole task tree from its root, so the cost per step
   grows with the number of steps already done (quadratic run time).
"""

# The serializer is built once: configuring its registry is setup, not a per-step cost.
_SERIALIZER = BpmnWorkflowSerializer(BpmnWorkflowSerializer.configure(SPIFF_CONFIG))

# The file text is read once; every parse_once() call parses it from scratch.
ORDER_BPMN_TEXT: bytes = BPMN_PATH.read_bytes()


# --------------------------------------------------------------------------- parsing

def _parse(bpmn_text: bytes | str, process_id: str, validate: bool = True):
    """Parse BPMN text with a brand-new SpiffBpmnParser and return the process spec.

    ``validate`` runs the BPMN 2.0 + spiffworkflow XSD validation, as a service
    loading user-supplied diagrams would.
    """
    if isinstance(bpmn_text, str):
        bpmn_text = bpmn_text.encode("utf-8")
    parser = SpiffBpmnParser(validator=VALIDATOR if validate else None)
    parser.add_bpmn_str(bpmn_text)
    return parser.get_spec(process_id)


def parse_once(validate: bool = True):
    """Parse order_fulfillment.bpmn from its text, fresh on every call (no caching).

    This is what the benchmark times as "parse".
    """
    return _parse(ORDER_BPMN_TEXT, PROCESS_ID, validate)


def load_spec():
    """Return the parsed order fulfillment spec (one fresh parse of the file)."""
    return parse_once()


# --------------------------------------------------------------------------- serialization

def serialize(workflow: BpmnWorkflow) -> str:
    """Whole workflow (state, data, spec) to JSON with BpmnWorkflowSerializer."""
    return _SERIALIZER.serialize_json(workflow)


def deserialize(text: str) -> BpmnWorkflow:
    """JSON back to a live BpmnWorkflow."""
    return _SERIALIZER.deserialize_json(text)


def _round_trip(workflow: BpmnWorkflow) -> BpmnWorkflow:
    """What a durable engine does at each park: persist, forget, reload."""
    return deserialize(serialize(workflow))


# --------------------------------------------------------------------------- the embedding service

@dataclass
class RunResult:
    """Outcome of one instance, for the benchmark's checks.

    status        "completed", "failed", "compensation_failed" or "waiting"
    commands      every command sent, in order ("participant.command")
    replies       every reply delivered, in order
    completed     BPMN ids of the completed tasks/events, in execution order
    undo          the undo commands sent, in order (subset of ``commands``)
    failure_reason  the ``fail`` reason, or None
    """

    status: str
    commands: list = field(default_factory=list)
    replies: list = field(default_factory=list)
    completed: list = field(default_factory=list)
    undo: list = field(default_factory=list)
    failure_reason: str | None = None

    @property
    def completed_replies(self) -> list:
        """Reply events the process completed (the .proc's ``expect completed``)."""
        return [c for c in self.completed if c in REPLY_EVENT_IDS]


def start_instance(spec, data: Mapping | None = None) -> BpmnWorkflow:
    """Create an instance, give it its input and run it to its first park."""
    workflow = BpmnWorkflow(spec)
    start = workflow.get_next_task(state=TaskState.READY)
    start.data.update(DEFAULT_INPUT if data is None else data)
    workflow.do_engine_steps()
    return workflow


def deliver(workflow: BpmnWorkflow, reply: str, payload: Mapping | None = None) -> None:
    """Deliver a participant's reply as a BPMN message and run to the next park."""
    workflow.send_event(BpmnEvent(MessageEventDefinition(reply), payload=dict(payload or {})))
    workflow.do_engine_steps()


def take_commands(workflow: BpmnWorkflow) -> list:
    """Take the outbound messages (the commands to send) out of the workflow."""
    return workflow.get_events()


def _outcome(workflow: BpmnWorkflow, commands: list, replies: list) -> RunResult:
    """Summarise a finished (or parked) instance."""
    completed = [
        t.task_spec.bpmn_id
        for t in workflow.get_tasks(state=TaskState.COMPLETED)
        if t.task_spec.bpmn_id is not None
    ]
    status = "waiting"
    if workflow.is_completed():
        status = next((END_STATUS[c] for c in completed if c in END_STATUS), "completed")
    data = workflow.data if workflow.is_completed() else {}
    return RunResult(
        status=status,
        commands=commands,
        replies=replies,
        completed=completed,
        undo=[c for c in commands if c in UNDO_COMMANDS],
        failure_reason=data.get("failure_reason"),
    )


def drive(spec, replies: Mapping[str, str], *, durable: bool = False,
          data: Mapping | None = None, max_steps: int = 10_000) -> RunResult:
    """Run one instance, answering every command with ``replies[command]``.

    Each step: take the commands the workflow emitted, deliver the reply to the
    oldest one, let the engine run to its next park.  With ``durable=True`` the
    whole workflow is serialized to JSON and read back after the start and after
    every step, before anything else touches it.
    """
    workflow = start_instance(spec, data)
    if durable:
        workflow = _round_trip(workflow)
    commands, delivered, pending = [], [], []
    for _ in range(max_steps):
        for event in take_commands(workflow):
            name = event.event_definition.name
            commands.append(name)
            pending.append((name, event.payload))
        if workflow.is_completed() or not pending:
            break
        command, payload = pending.pop(0)
        reply = replies.get(command)
        if reply is None:       # the participant stays silent: the instance stays parked
            break
        deliver(workflow, reply, {"orderId": (payload or {}).get("orderId")})
        delivered.append(reply)
        if durable:
            workflow = _round_trip(workflow)
    return _outcome(workflow, commands, delivered)


def run_happy(spec) -> RunResult:
    """One instance where every participant says yes; returns its RunResult.

    Expected: status "completed", commands [inventory.reserve, payment.authorize,
    shipping.create], completed_replies [inventory_reserved, payment_authorized,
    shipment_created], undo [].
    """
    return drive(spec, HAPPY_REPLIES)


def run_failure(spec) -> RunResult:
    """Inventory and payment succeed, shipping replies shipment_rejected.

    Expected: status "failed", failure_reason "shipping refused the order",
    ``result.undo == ["payment.void", "inventory.release"]`` (the undo order).
    """
    return drive(spec, FAILURE_REPLIES)


def run_happy_serialized(spec) -> RunResult:
    """``run_happy`` with a JSON round trip (BpmnWorkflowSerializer) after every step."""
    return drive(spec, HAPPY_REPLIES, durable=True)


def run_failure_serialized(spec) -> RunResult:
    """``run_failure`` with a JSON round trip (BpmnWorkflowSerializer) after every step."""
    return drive(spec, FAILURE_REPLIES, durable=True)


# --------------------------------------------------------------------------- timers (extra check)

def expire_timers(workflow: BpmnWorkflow) -> None:
    """Pretend the clock moved past every armed timer, then let the engine react.

    SpiffWorkflow keeps a duration timer's due time as ``event_value`` in the
    waiting task's internal data (for an event-based gateway, in the gateway's
    task).  Back-dating it is the test stand-in for waiting; a real service
    would simply call ``refresh_timers()`` / ``do_engine_steps()`` later.
    """
    past = (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat()
    for task in list(workflow.event_manager.tasks.values()):
        definition = task.task_spec.event_definition
        has_timer = isinstance(definition, TimerEventDefinition) or (
            isinstance(definition, MultipleEventDefinition)
            and any(isinstance(d, TimerEventDefinition) for d in definition.event_definitions)
        )
        if has_timer:
            task.internal_data["event_value"] = past
    workflow.refresh_timers()
    workflow.do_engine_steps()


def run_timeout(spec) -> RunResult:
    """Inventory never answers: 30s timeout, 2 retries after a 5s backoff, then fail.

    Checks the retry loop of the BPMN. Expected: commands
    [inventory.reserve] * 3, status "failed", nothing to undo.
    """
    workflow = start_instance(spec)
    commands = []
    for _ in range(20):
        commands += [e.event_definition.name for e in take_commands(workflow)]
        if workflow.is_completed():
            break
        expire_timers(workflow)
    return _outcome(workflow, commands, [])



# --------------------------------------------------------------------------- deep processes

@contextmanager
def deep_process_support(recursion_limit: int = 100_000):
    """Let SpiffWorkflow handle processes deeper than about 500 sequential steps.

    Two stock limits get in the way of a long sequential process:

    * the parser follows sequence flows recursively (a few Python frames per
      node), so ~160+ steps exceed Python's default recursion limit of 1000;
    * ``TaskIterator`` / ``BpmnTaskIterator`` stop at ``max_depth=1000`` tree
      levels by default.  Every step of a sequence is one level deeper, so past
      that depth ``do_engine_steps()`` no longer sees the READY tasks and
      ``is_completed()`` answers True: a 1000-step process silently "completes"
      after step 500 (2 levels per step).

    Inside this context both limits are lifted (the iterators' default
    ``max_depth`` becomes unlimited); they are restored on exit.
    """
    old_limit = sys.getrecursionlimit()
    old_defaults = TaskIterator.__init__.__defaults__, BpmnTaskIterator.__init__.__defaults__
    unlimited = sys.maxsize
    sys.setrecursionlimit(max(old_limit, recursion_limit))
    TaskIterator.__init__.__defaults__ = (None, unlimited, True, None)
    BpmnTaskIterator.__init__.__defaults__ = (None, unlimited, True, False, None)
    try:
        yield
    finally:
        sys.setrecursionlimit(old_limit)
        TaskIterator.__init__.__defaults__, BpmnTaskIterator.__init__.__defaults__ = old_defaults


# --------------------------------------------------------------------------- linear process

def linear_bpmn(n: int) -> str:
    """BPMN text of a process with ``n`` sequential waiting steps.

    Step i is a send task (command ``step_i.cmd``) followed by an intermediate
    message catch event waiting for ``step_i.done``.
    """
    messages, nodes, flows = [], [], []
    previous = "start"
    for i in range(n):
        messages.append(f'<bpmn:message id="m_cmd_{i}" name="step_{i}.cmd"/>'
                        f'<bpmn:message id="m_done_{i}" name="step_{i}.done"/>')
        nodes.append(
            f'<bpmn:sendTask id="send_{i}" name="Step {i}" messageRef="m_cmd_{i}"/>'
            f'<bpmn:intermediateCatchEvent id="wait_{i}" name="step_{i}.done">'
            f'<bpmn:messageEventDefinition messageRef="m_done_{i}"/></bpmn:intermediateCatchEvent>'
        )
        flows.append(f'<bpmn:sequenceFlow id="f_in_{i}" sourceRef="{previous}" targetRef="send_{i}"/>'
                     f'<bpmn:sequenceFlow id="f_mid_{i}" sourceRef="send_{i}" targetRef="wait_{i}"/>')
        previous = f"wait_{i}"
    flows.append(f'<bpmn:sequenceFlow id="f_end" sourceRef="{previous}" targetRef="end"/>')
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" '
        'id="linear_definitions" targetNamespace="http://procflow.example/bench">\n'
        + "\n".join(messages)
        + f'\n<bpmn:process id="linear_{n}" isExecutable="true">\n'
        '<bpmn:startEvent id="start"/>\n'
        + "\n".join(nodes) + "\n" + "\n".join(flows)
        + '\n<bpmn:endEvent id="end"/>\n</bpmn:process>\n</bpmn:definitions>\n'
    )


def linear_spec(n: int):
    """Parse the generated ``n``-step linear process (see ``linear_bpmn``).

    Parsed inside ``deep_process_support()``: the stock recursion limit stops
    the parser at about 160 steps.
    """
    with deep_process_support():
        return _parse(linear_bpmn(n), f"linear_{n}")


def run_linear(spec, n: int, deep: bool = True) -> int:
    """Drive a linear instance to its end, answering each ``step_i.cmd`` with ``step_i.done``.

    Returns the number of replies delivered (== n); raises if it did not finish.
    Runs inside ``deep_process_support()``; with ``deep=False`` it runs on stock
    limits, where n > ~500 stops early (and the RuntimeError says so).
    """
    with deep_process_support() if deep else nullcontext():
        workflow = start_instance(spec, {})
        delivered = 0
        while True:
            events = take_commands(workflow)
            if not events:
                break
            for event in events:
                deliver(workflow, event.event_definition.name[: -len(".cmd")] + ".done")
                delivered += 1
        if not workflow.is_completed() or delivered != n:
            raise RuntimeError(f"linear run stopped after {delivered} of {n} steps "
                               f"(workflow reports completed={workflow.is_completed()})")
    return delivered


# --------------------------------------------------------------------------- parked instances

def park_instances(spec, count: int) -> list:
    """Create ``count`` order instances, each run to its first wait (inventory reply).

    Their outbound command is taken out (as a service would send it), so what
    stays in memory is only the parked instance.  Returns the list of
    BpmnWorkflow objects, to keep them alive while the caller measures.
    """
    instances = []
    for i in range(count):
        workflow = start_instance(spec, {"orderId": f"ord_{i}", "amount": 180.0})
        take_commands(workflow)
        instances.append(workflow)
    return instances


# --------------------------------------------------------------------------- self-check

def _median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time in seconds of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _rate(run: Callable, spec, instances: int, repeats: int) -> float:
    """Median instances per second over ``repeats`` batches of ``instances`` runs."""
    return instances / _median_time(lambda: [run(spec) for _ in range(instances)], repeats)


def _check_results(spec) -> None:
    """Assert that every run really went where it should."""
    happy = run_happy(spec)
    assert happy.status == "completed", happy
    assert happy.commands == ["inventory.reserve", "payment.authorize", "shipping.create"], happy
    assert happy.completed_replies == ["inventory_reserved", "payment_authorized", "shipment_created"], happy
    assert happy.undo == [], happy

    failure = run_failure(spec)
    assert failure.status == "failed", failure
    assert failure.failure_reason == "shipping refused the order", failure
    assert failure.undo == ["payment.void", "inventory.release"], failure

    assert run_happy_serialized(spec) == happy
    assert run_failure_serialized(spec) == failure

    timeout = run_timeout(spec)
    assert timeout.status == "failed", timeout
    assert timeout.commands == ["inventory.reserve"] * 3, timeout
    assert timeout.undo == [], timeout

    # Payment declined: only the inventory is released.
    declined = drive(spec, {"inventory.reserve": "inventory_reserved",
                            "payment.authorize": "payment_declined",
                            "inventory.release": "inventory_released"})
    assert declined.status == "failed" and declined.undo == ["inventory.release"], declined
    assert declined.failure_reason == "payment declined", declined

    print("checks: happy, failure, serialized happy/failure, timeout+retry, payment declined: OK")
    print(f"  happy completed:   {happy.completed_replies}")
    print(f"  failure undo order: {failure.undo} (reason: {failure.failure_reason!r})")


def main() -> None:
    """Run each function once, check the outcomes, print the timings."""
    print(f"SpiffWorkflow side (python {sys.version.split()[0]})")
    spec = load_spec()
    _check_results(spec)

    parse_s = _median_time(parse_once, 30)
    parse_nv_s = _median_time(lambda: parse_once(validate=False), 30)
    print(f"parse order_fulfillment.bpmn: {parse_s * 1e3:.2f} ms "
          f"(without XSD validation: {parse_nv_s * 1e3:.2f} ms)")

    print(f"happy instances/s:            {_rate(run_happy, spec, 200, 5):8.0f}")
    print(f"failure instances/s:          {_rate(run_failure, spec, 200, 5):8.0f}")
    print(f"serialized happy inst/s:      {_rate(run_happy_serialized, spec, 50, 5):8.0f}")
    print(f"serialized failure inst/s:    {_rate(run_failure_serialized, spec, 50, 5):8.0f}")
    parked_json = serialize(park_instances(spec, 1)[0])
    print(f"JSON of one parked instance:  {len(parked_json)} bytes (spec included)")

    for n, repeats in ((10, 7), (100, 5), (1000, 3)):
        t0 = time.perf_counter()
        lspec = linear_spec(n)
        lparse = time.perf_counter() - t0
        if n < 1000:
            run_linear(lspec, n)  # warm up; every run checks that it reached the end
        seconds = _median_time(lambda: run_linear(lspec, n), repeats)
        print(f"linear n={n:<5} {seconds / n * 1e6:9.1f} µs/step  "
              f"(run {seconds * 1e3:.1f} ms, parse {lparse * 1e3:.1f} ms)")

    count = 10_000
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    parked = park_instances(spec, count)
    elapsed = time.perf_counter() - t0
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(f"parked {len(parked)} instances: {(after - before) / count:,.0f} bytes/instance "
          f"(tracemalloc; {elapsed:.1f} s to create under tracemalloc)")
    print()
    print(SPIFF_LIMITATIONS)


if __name__ == "__main__":
    main()
