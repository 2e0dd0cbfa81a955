"""Issue 6, must-show 1, and issue 13, must-show 2: instances survive SIGKILL.

Worker processes (`tests/workers/crash_worker.py`) drive instances of the sample processes
through their scenarios' replies and timers on virtual time. One run is never killed (the
reference, one worker); another is killed with SIGKILL at random moments and started again
each time: on SQLite one worker, 200 instances, 20 kills; on PostgreSQL three workers at once
on one store, 300 instances, 30 kills in all (each kill lands on one of the three, at random).
At the end every instance has the same state record and the same history in both, and a
command was dispatched twice under one dedup key only when a crash came between its send and
its record (those are counted and printed). Two and four workers that are never killed send
no command twice and end where one worker ends.

Each run is its own process, forked from a small server process that has already imported
procflow and compiled the sample files (building the parser costs more than a second, paid
once instead of at each of the twenty restarts); a run inherits no instance state: it reads
everything from the store. `PROCFLOW_CRASH_SEED` changes where the kills land.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from procflow.dsl.compiler import load
from procflow.dsl.model import ProcessDefinition
from procflow.errors import ProcflowError
from procflow.interpreter.simulate import check_scenario, scenario_input, simulate
from procflow.interpreter.state import parse_instant
from procflow.interpreter.stores import open_store

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "workers" / "crash_worker.py"
START = "2026-01-01T09:00:00Z"
SEED = int(os.environ.get("PROCFLOW_CRASH_SEED", "20260101"))


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(v, (*path, k))]
    if isinstance(value, list):
        return [leaf for i, v in enumerate(value) for leaf in _leaves(v, (*path, i))]
    return [(path, value)]


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {k: _replaced(v, rest, new) if k == head else v for k, v in value.items()}
    return [_replaced(v, rest, new) if i == head else v for i, v in enumerate(value)]


def _correlation(definition: ProcessDefinition, data: dict[str, Any]) -> Any:
    return definition.correlate.evaluate({"input": data, "steps": {}}) if definition.correlate else None


def _unique(definition: ProcessDefinition, given: dict[str, Any], i: int) -> dict[str, Any]:
    """The input with its correlation key made unique per instance (one business key, one
    instance): the first leaf whose change changes the key gets the instance number."""
    if definition.correlate is None:
        return given

    def key(data: dict[str, Any]) -> Any:
        return _correlation(definition, data)

    before = key(given)
    leaves = _leaves(given)
    ordered = [leaf for leaf in leaves if leaf[1] == before] + [leaf for leaf in leaves if leaf[1] != before]
    for path, value in ordered:
        if isinstance(value, bool) or not isinstance(value, str | int):
            continue
        changed = _replaced(given, path, f"{value}x{i:03d}" if isinstance(value, str) else value * 1000 + i)
        if key(changed) != before:
            return changed  # type: ignore[no-any-return]
    raise AssertionError(f"cannot make the correlation key of `{definition.name}` unique")


def _eligible() -> list[tuple[str, ProcessDefinition, str]]:
    """(file, definition, scenario) for every sample scenario that passes, ends by itself, and
    still starts when its correlation key is made unique, and whose replies the crash worker
    can give: it answers by command and attempt (`tests/workers/crash_worker.py`), so a
    scenario that answers one item of a for-each, one round of a loop or a human task
    differently is left out (the other scenarios of those samples take part)."""
    found = []
    for path in sorted((ROOT / "processes").glob("*.proc")):
        try:
            definition = load(path)
        except ProcflowError:
            continue
        for scenario in definition.scenarios:
            if any(rule.item is not None or rule.round is not None or rule.task for rule in scenario.syntax.rules):
                continue
            try:
                outcome = check_scenario(definition, scenario)
            except ProcflowError:
                continue
            if not (outcome.passed and outcome.result is not None and outcome.result.state.is_terminal):
                continue
            try:
                _simulate(definition, scenario.name, 0)
            except (ProcflowError, AssertionError):
                continue
            found.append((str(path), definition, scenario.name))
    return found


def _simulate(definition: ProcessDefinition, scenario: str, i: int) -> tuple[str, dict[str, Any], str]:
    """Instance `i` of a scenario: its id, its input (unique business key) and its simulated end."""
    chosen = next(s for s in definition.scenarios if s.name == scenario)
    given = scenario_input(chosen)
    workflow_id = f"wf_{i:03d}"
    data = _unique(definition, given, i)
    result = simulate(definition, workflow_id=workflow_id, input=data, start=parse_instant(START), scenario=chosen)
    return workflow_id, data, result.state.status


def _plan(tmp: Path, count: int) -> tuple[Path, dict[str, str]]:
    pairs = _eligible()
    order = [p for p in pairs if p[1].name == "order-fulfillment"]
    assert len(order) >= 8, "the order process and its scenarios must take part"
    # Half the instances run the order process (every scenario of it), half the other samples.
    others = [p for p in pairs if p[1].name != "order-fulfillment"] or order
    instances: list[dict[str, Any]] = []
    expected: dict[str, str] = {}
    for i in range(count):
        file, definition, scenario = order[(i // 2) % len(order)] if i % 2 == 0 else others[(i // 2) % len(others)]
        workflow_id, data, status = _simulate(definition, scenario, i)
        instances.append({"workflowId": workflow_id, "file": file, "scenario": scenario, "input": data})
        expected[workflow_id] = status
    by_file = {file: definition for file, definition, _ in pairs}
    keys = [(i["file"], json.dumps(_correlation(by_file[i["file"]], i["input"]))) for i in instances]
    assert len(set(keys)) == len(keys), "every instance has its own business key"
    plan = tmp / "plan.json"
    plan.write_text(json.dumps({"start": START, "instances": instances}), encoding="utf-8")
    return plan, expected


class Worker:
    """A worker server: each `run` is a new process forked from it, killed or awaited here."""

    def __init__(self, store: str, folder: Path, plan: Path, name: str, mail_all: bool) -> None:
        command = [
            sys.executable, str(WORKER), "--serve", "--store", store, "--name", name,
            "--mailbox", str(folder / "mail.sqlite"), "--plan", str(plan), "--log", str(folder / "sent.log"),
            *(["--mail-all"] if mail_all else []),
        ]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._read() == "ready"

    def _read(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line:
            raise AssertionError(f"the worker server stopped (exit {self.process.wait(timeout=10)})")
        return line

    def _say(self, line: str) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self._read()

    def run(self, number: int) -> None:
        """Start run `number` (a new process)."""
        assert self._say(f"run {number}").startswith("started ")

    def kill(self) -> int:
        """SIGKILL the run; its exit code (-9 when the kill landed, 0 when it had finished)."""
        return int(self._say("kill").split()[1])

    def wait(self) -> int:
        """Let the run finish; its exit code."""
        return int(self._say("wait").split()[1])

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("quit\n")
        self.process.stdin.close()
        assert self.process.stdout is not None
        self.process.stdout.close()
        self.process.wait(timeout=30)


class Workers:
    """`count` worker servers on one store, one mailbox and one log (named w0, w1, ...)."""

    def __init__(self, store: str, folder: Path, plan: Path, count: int, mail_all: bool) -> None:
        folder.mkdir()
        self.workers: list[Worker] = []
        self.runs: list[int] = []
        try:
            for i in range(count):
                self.workers.append(Worker(store, folder, plan, f"w{i}", mail_all))
                self.runs.append(0)
        except BaseException:
            self.close()
            raise

    def start_all(self) -> None:
        for worker in self.workers:
            worker.run(0)

    def kill_and_restart(self, i: int) -> int:
        """SIGKILL worker `i` and start it again; the exit code of the run killed."""
        code = self.workers[i].kill()
        self.runs[i] += 1
        self.workers[i].run(self.runs[i])
        return code

    def wait_all(self) -> None:
        for i, worker in enumerate(self.workers):
            assert worker.wait() == 0, f"worker w{i} failed; its traceback is on stderr"

    def close(self) -> None:
        for worker in self.workers:
            worker.close()


def _run_to_end(store: str, folder: Path, plan: Path, count: int, mail_all: bool) -> float:
    workers = Workers(store, folder, plan, count, mail_all)
    try:
        began = time.perf_counter()
        workers.start_all()
        workers.wait_all()
        return time.perf_counter() - began
    finally:
        workers.close()


def _final(store: str) -> dict[str, dict[str, Any]]:
    with open_store(store, create=False) as opened:
        return {state.workflowId: state.to_json() for state in opened.instances()}


def _sends(folder: Path) -> tuple[dict[str, list[str]], set[tuple[str, str]]]:
    """Each command's sends (the runs that sent it, in order) and the (run, command) marks."""
    sends: dict[str, list[str]] = defaultdict(list)
    marks: set[tuple[str, str]] = set()
    for line in (folder / "sent.log").read_text(encoding="utf-8").splitlines():
        parts = line.split(" ")
        if len(parts) != 3:
            continue
        kind, run, key = parts
        if kind == "send":
            sends[key].append(run)
        elif kind == "mark":
            marks.add((run, key))
    return sends, marks


def _difference(want: dict[str, dict[str, Any]], got: dict[str, dict[str, Any]], workflow_id: str) -> str:
    """Where one instance's two states part (the fields, and the first history entry, that differ)."""
    a, b = want[workflow_id], got[workflow_id]
    fields = [k for k in a if k != "history" and a[k] != b.get(k)]
    entries = [(x, y) for x, y in zip(a["history"], b["history"], strict=False) if x != y]
    first = f"history entry {entries[0][0]} vs {entries[0][1]}" if entries else f"{len(a['history'])} vs {len(b['history'])} entries"
    return f"fields {fields}; {first}"


def _store(kind: str, folder: Path, request: pytest.FixtureRequest) -> str:
    """A new store: a file in `folder` (made by `Workers`), or a PostgreSQL schema of its own."""
    if kind == "sqlite":
        return str(folder / "store.sqlite")
    make: Callable[[], str] = request.getfixturevalue("new_postgres_url")
    return make()


CASES = {
    # kind: (instances, workers, kills)
    "sqlite": (200, 1, 20),
    "postgres": (300, 3, 30),
}
"""With one worker, replies due at once are applied by the process that sent the command
(before it is marked sent); with several, they go through the mailbox, in its order, so that
two workers sending two commands of one instance at once cannot apply their replies in
another order than one worker does (the reference runs the same way)."""


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(CASES))
def test_instances_survive_sigkill(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    instances, count, kills_wanted = CASES[kind]
    mail_all = count > 1
    plan, expected = _plan(tmp_path, instances)

    reference = tmp_path / "reference"
    reference_store = _store(kind, reference, request)
    took = _run_to_end(reference_store, reference, plan, 1, mail_all)
    print(f"\nthe uninterrupted run took {took:.1f}s")

    crashed = tmp_path / "crashed"
    crashed_store = _store(kind, crashed, request)
    rng = random.Random(SEED)
    # Each kill lands at a random moment of its run; the budget spreads the kills over the
    # whole work (a run progresses at most as long as it lives) without finishing it early.
    budget = 0.6 * took
    kills = 0
    workers = Workers(crashed_store, crashed, plan, count, mail_all)
    try:
        workers.start_all()
        while kills < kills_wanted:
            delay = rng.uniform(0.0, 1.5 * budget / (kills_wanted - kills + 1))
            budget -= delay
            time.sleep(delay)
            victim = rng.randrange(count)
            code = workers.kill_and_restart(victim)
            if code == 0:
                break  # it finished before the kill landed: the work is done
            assert code == -signal.SIGKILL, f"worker w{victim} failed (exit {code}); its traceback is on stderr"
            kills += 1
        assert kills >= kills_wanted, f"the work ended after {kills} kills; make it longer or the kills sooner"
        workers.wait_all()
    finally:
        workers.close()

    want, got = _final(reference_store), _final(crashed_store)
    assert sorted(got) == sorted(want) == [f"wf_{i:03d}" for i in range(instances)]
    different = [wid for wid in want if want[wid] != got[wid]]
    assert different == [], f"{len(different)} instances differ after crashes, e.g. {different[:3]}: {_difference(want, got, different[0])}"
    assert all(state["status"] in ("completed", "failed", "timed_out", "compensated", "compensation_failed") for state in want.values())
    # The harness drives each instance as the simulator does: same outcome as `procflow test`.
    assert {wid: s["status"] for wid, s in want.items()} == expected

    reference_sends, _ = _sends(reference)
    assert [k for k, runs in reference_sends.items() if len(runs) > 1] == [], "sent twice without any crash"
    sends, marks = _sends(crashed)
    assert set(sends) == set(reference_sends), "the same commands were sent"
    resent: list[str] = []
    for key, runs in sends.items():
        for earlier, later in zip(runs, runs[1:], strict=False):
            # A second send is allowed only after a crash that came between send and record.
            assert earlier != later, f"{key} sent twice in run {earlier}"
            assert (earlier, key) not in marks, f"{key} was recorded as sent in run {earlier}, yet sent again"
            resent.append(key)
    statuses: dict[str, int] = defaultdict(int)
    for state in want.values():
        statuses[state["status"]] += 1
    print(
        f"\ncrash test on {kind}: {instances} instances ({dict(sorted(statuses.items()))}), {count} worker(s), "
        f"{kills} SIGKILLs (seed {SEED}; runs {workers.runs}; runs lived {0.6 * took - budget:.1f}s in all before their "
        f"kill, the uninterrupted run took {took:.1f}s), {sum(len(r) for r in sends.values())} sends of {len(sends)} "
        f"commands; {len(resent)} re-sent after a crash between send and record: {sorted(resent)}"
    )
