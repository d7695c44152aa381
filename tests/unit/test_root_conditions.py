"""Conditions on tasks without parents (roots, the on-failure task) and the look-back of
user-event conditions: what registration accepts, and what a run starts with."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from tests.unit.definitions import base, step, workflow

from hewer.engine.core.conditions import (
    Action,
    ConditionKind,
    InvalidCondition,
    look_back_start,
    parse_conditions,
)
from hewer.engine.core.dag import initial_tasks, progress, starts_waiting
from hewer.engine.core.definition import InvalidDefinition, parse_workflow
from hewer.engine.core.model import StepKind, TaskSnapshot, TaskStatus


def sleep(action: str, group: str, duration: str = "5s") -> dict[str, Any]:
    return {"base": base(action, group), "sleep_for": duration}


def user_event(action: str, group: str, key: str, **fields: Any) -> dict[str, Any]:
    return {"base": base(action, group), "user_event_key": key, **fields}


ROOT_CONDITIONS = {
    "sleep_conditions": [sleep("QUEUE", "wait")],
    "user_event_conditions": [user_event("SKIP", "skip", "skip-it")],
}


# -- registration -------------------------------------------------------------------------


def test_a_parent_condition_on_a_task_without_parents_is_refused_clearly() -> None:
    raw = {
        "parent_override_conditions": [
            {"base": base("SKIP", "g", "true"), "parent_readable_id": "x"}
        ]
    }
    with pytest.raises(InvalidCondition, match="this task has no parents"):
        parse_conditions(raw, parents=(), where="task 'a'")
    definition = {
        "name": "wf",
        "tasks": [{"readable_id": "a", "action": "wf:a", "conditions": raw}],
    }
    with pytest.raises(InvalidDefinition, match=r"task 'a'.*has no parents"):
        parse_workflow(definition)


@pytest.mark.parametrize(
    ("since", "message"),
    [("yesterday", "not a timestamp"), ("2024-01-01T00:00:00", "no time zone")],
)
def test_a_look_back_start_must_be_a_timestamp_with_a_zone(since: str, message: str) -> None:
    raw = {"user_event_conditions": [user_event("QUEUE", "g", "go", consider_events_since=since)]}
    with pytest.raises(InvalidCondition, match=message):
        parse_conditions(raw, parents=(), where="t")


def test_the_look_back_start_is_read_from_the_wire_timestamp() -> None:
    raw = {
        "user_event_conditions": [
            user_event("QUEUE", "g", "go", consider_events_since="2024-05-01T10:00:00.123456789Z"),
            user_event("QUEUE", "h", "now-only"),
        ],
        "sleep_conditions": [sleep("QUEUE", "s")],
    }
    sleeping, with_look_back, without = parse_conditions(raw, parents=(), where="t")
    assert look_back_start(with_look_back) == datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert look_back_start(without) is None
    assert look_back_start(sleeping) is None


# -- what a run starts with ---------------------------------------------------------------


def test_a_root_with_conditions_starts_waiting_on_all_of_them() -> None:
    version = workflow(step("a", conditions=ROOT_CONDITIONS), step("b", "a"), step("c"))
    assert starts_waiting(version)
    tasks = {n.step.readable_id: n for n in initial_tasks(version)}
    assert (tasks["a"].status, tasks["c"].status) == (TaskStatus.WAITING, TaskStatus.QUEUED)
    assert [(c.kind, c.action) for c in tasks["a"].pending] == [
        (ConditionKind.SLEEP, Action.QUEUE),
        (ConditionKind.USER_EVENT, Action.SKIP),
    ]
    assert tasks["c"].pending == ()
    assert "b" not in tasks


def test_roots_without_conditions_do_not_start_waiting() -> None:
    # a child's conditions do not make the run start waiting: they wait for its parents
    version = workflow(step("a"), step("b", "a", conditions=ROOT_CONDITIONS))
    assert not starts_waiting(version)
    assert [n.status for n in initial_tasks(version)] == [TaskStatus.QUEUED]


def test_an_on_failure_task_with_conditions_waits_with_its_error_map() -> None:
    handler = step("handler", kind=StepKind.ON_FAILURE, conditions=ROOT_CONDITIONS)
    version = workflow(step("a"), handler)
    failed = TaskSnapshot(
        id="t-a",
        step_id="step-a",
        readable_id="a",
        status=TaskStatus.FAILED,
        output=None,
        error="boom",
    )
    (new,) = progress(version, [failed]).new_tasks
    assert (new.status, new.payload_extra) == (
        TaskStatus.WAITING,
        {"step_run_errors": {"a": "boom"}},
    )
    assert new.pending == handler.conditions
    # nothing failed: skipped as always, its conditions never matter
    completed = TaskSnapshot(
        id="t-a",
        step_id="step-a",
        readable_id="a",
        status=TaskStatus.COMPLETED,
        output="{}",
        error=None,
    )
    (skipped,) = progress(version, [completed]).new_tasks
    assert (skipped.status, skipped.skipped) == (TaskStatus.COMPLETED, True)
