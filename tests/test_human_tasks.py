"""Human tasks (`task review by group "…" due 2d { form … escalate … }`): what a task list
service receives, what the person's answer must be, how overdue tasks escalate, and what
operators see."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import procflow
from procflow.console_data import timer_rows
from procflow.dsl import model as m
from procflow.dsl.formatter import format_text
from procflow.dsl.parser import parse
from procflow.dsl.paths import enumerate_paths
from procflow.interpreter.simulate import check_scenario
from procflow.interpreter.stores import OutboxEntry
from procflow.open_tasks import open_tasks
from procflow.operator_cli import inspect_text

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 3, 23, 9, 0, tzinfo=UTC)

REVIEW = """
process review-demo {
  correlate by input.id
  input { id: string, reviewer: string }

  task review by input.reviewer due 2d {
    doc "Someone reads it"
    form { approved: boolean, note?: string }
    details { id: input.id }
    escalate remind due 1d
    escalate reassign to group "managers" due 12h
    escalate fail "nobody reviewed it"
  }
  if not review.approved {
    end "refused"
  }
}
"""


def _start() -> tuple[m.ProcessDefinition, procflow.Transition]:
    definition = procflow.load_text(REVIEW)
    return definition, procflow.start(definition, "wf_1", {"id": "d1", "reviewer": "ana"}, NOW)


def _reply(data: dict[str, object], message_id: str = "m1") -> procflow.Reply:
    return procflow.Reply(type="review_completed", correlationId="d1", messageId=message_id, data=data)


def test_a_task_is_a_command_to_the_task_participant_with_who_when_and_the_form() -> None:
    _, first = _start()
    [dispatch] = first.dispatches
    command = dispatch.command
    assert command.commandName == "task.review" and command.correlationId == "d1"
    assert command.data == {
        "task": "review",
        "assignee": "ana",  # `by input.reviewer`, evaluated
        "details": {"id": "d1"},
        "form": {
            "type": "object",
            "properties": {"approved": {"type": "boolean"}, "note": {"type": "string"}},
            "required": ["approved"],
        },
        "due": "2026-03-25T09:00:00Z",
    }
    assert first.state.status == "waiting_for_review"
    assert first.state.timeoutAt == "2026-03-25T09:00:00Z"


def test_the_answer_must_fill_the_form_and_is_read_through_the_task_name() -> None:
    definition, first = _start()
    with pytest.raises(procflow.MessageRefused, match="breaks its declared schema"):
        procflow.deliver(definition, first.state, _reply({"approved": "yes"}), NOW)
    done = procflow.deliver(definition, first.state, _reply({"approved": False, "note": "no"}), NOW + timedelta(hours=1))
    assert done.state.status == "completed" and done.state.outcome == "refused"
    assert done.state.data["review"] == {"approved": False, "note": "no"}
    assert list(done.state.completedSteps) == ["review_completed"]


def test_an_overdue_task_is_reminded_then_reassigned_then_fails() -> None:
    definition, first = _start()
    state = first.state
    reminded = procflow.advance(definition, state, NOW + timedelta(days=2))
    [remind] = reminded.dispatches
    assert remind.attempt == 2
    assert remind.command.data["escalation"] == "remind" and remind.command.data["assignee"] == "ana"
    assert remind.command.data["due"] == "2026-03-26T09:00:00Z"
    reassigned = procflow.advance(definition, reminded.state, NOW + timedelta(days=3))
    [reassign] = reassigned.dispatches
    assert reassign.command.data["escalation"] == "reassign"
    assert reassign.command.data["group"] == "managers" and "assignee" not in reassign.command.data
    assert reassign.command.data["due"] == "2026-03-26T21:00:00Z"
    failed = procflow.advance(definition, reassigned.state, NOW + timedelta(days=3, hours=12))
    assert failed.dispatches == []
    assert failed.state.failure is not None and failed.state.failure.reason == "nobody reviewed it"


def test_a_jump_in_time_takes_each_escalation_when_its_due_passed() -> None:
    definition, first = _start()
    late = procflow.advance(definition, first.state, NOW + timedelta(days=30))
    assert [d.command.data.get("escalation") for d in late.dispatches] == ["remind", "reassign"]
    assert [d.command.data["due"] for d in late.dispatches] == ["2026-03-26T09:00:00Z", "2026-03-26T21:00:00Z"]
    assert late.state.failure is not None and late.state.failure.reason == "nobody reviewed it"


def test_the_first_person_may_still_complete_the_task_after_a_reminder() -> None:
    definition, first = _start()
    reminded = procflow.advance(definition, first.state, NOW + timedelta(days=2))
    done = procflow.deliver(definition, reminded.state, _reply({"approved": True}), NOW + timedelta(days=2, hours=1))
    assert done.state.status == "completed" and done.state.outcome is None


def test_inspect_and_the_console_show_who_has_the_open_task_and_until_when() -> None:
    definition, first = _start()
    reminded = procflow.advance(definition, first.state, NOW + timedelta(days=2))
    outbox = [
        OutboxEntry(i, d, "2026-03-23T09:00:00Z", None, 1) for i, d in enumerate([*first.dispatches, *reminded.dispatches])
    ]
    [task] = open_tasks(reminded.state, outbox)
    assert task.text == "review: ana, due 2026-03-26T09:00:00Z (round 2, remind)"
    assert "task            review: ana, due 2026-03-26T09:00:00Z (round 2, remind)" in inspect_text(reminded.state, 2, outbox)
    assert ("task review (round 2)", "ana to complete it", "2026-03-26T09:00:00Z") in timer_rows(reminded.state, outbox)
    # Without the command in the outbox, the wait still says until when.
    assert open_tasks(reminded.state, [])[0].text == "review: unknown, due 2026-03-26T09:00:00Z (round 2)"


def test_fmt_writes_a_task_and_its_scenario_lines_back_as_they_mean() -> None:
    text = REVIEW + """
scenario late {
  input { id: "d1", reviewer: "ana" }
  when task review attempt 2 complete { approved: true } after 1h
  when task review attempt 1 passes due
}
"""
    messy = text.replace("task review by input.reviewer due 2d {", "task   review   by input.reviewer due 2d{")
    formatted = format_text(messy)
    assert formatted == format_text(formatted)
    assert "  task review by input.reviewer due 2d {\n" in formatted
    assert "    escalate reassign to group \"managers\" due 12h\n" in formatted
    assert "  when task review attempt 2 complete { approved: true } after 1h\n" in formatted
    assert "  when task review attempt 1 passes due\n" in formatted
    source, again = parse(text), parse(formatted)
    assert source.process.body[0].task is not None and again.process.body[0].task is not None


def test_a_scenario_that_says_nothing_of_a_task_lets_its_dues_pass() -> None:
    definition = procflow.load_text(REVIEW + """
scenario forgotten {
  input { id: "d1", reviewer: "ana" }
  expect status timed_out
  expect commands [task.review, task.review, task.review]
  expect failure "nobody reviewed it"
}
""", scenarios=True)
    assert check_scenario(definition, definition.scenarios[0]).passed


def test_the_graph_marks_a_task() -> None:
    definition = procflow.load_text(REVIEW)
    data = m.graph_data(definition)
    [review] = [node for node in data["nodes"] if node["id"] == "review"]
    assert review["task"] is True and review["command"] == "task.review"
    assert definition.participants["task"].replies["review_completed"] == definition.nodes["review"].task.form  # type: ignore[union-attr]


def test_every_path_of_the_sample_review_has_a_scenario() -> None:
    definition = procflow.load(ROOT / "processes" / "credit_limit_review.proc")
    walked = set()
    for scenario in definition.scenarios:
        outcome = check_scenario(definition, scenario)
        assert outcome.passed, (scenario.name, outcome.differences)
        assert outcome.result is not None
        state = outcome.result.state
        said = f"failed: {state.failure.reason}" if state.failure else f"completed: {state.outcome}" if state.outcome else "completed"
        walked.add((said, tuple(d.command.commandName for d in outcome.result.dispatches)))
    for path in enumerate_paths(definition):
        assert (path.outcome, tuple(path.commands)) in walked, path.name


def test_a_deadline_before_the_last_due_is_counted_from_every_round_s_due() -> None:
    # The lowered `within` retries would count the first due three times (6d): the rounds are 2d + 1d + 1d.
    from procflow.dsl.validate import check_source

    text = REVIEW.replace("  input { id: string, reviewer: string }", "  input { id: string, reviewer: string }\n  deadline 3d")
    _, found = check_source(text, "review.proc")
    assert [(d.code, d.message) for d in found] == [(
        "W151", "the dues of task `review` (2d, then 1d, then 12h) add up to 3d12h and end after the process's "
        "`deadline 3d` (line 5): its last due can never pass",
    )]
    _, found = check_source(text.replace("deadline 3d", "deadline 4d"), "review.proc")
    assert found == []
