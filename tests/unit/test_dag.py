"""DAG progression: which tasks a run creates next, and when (and how) the run ends."""

from __future__ import annotations

import json

import pytest
from tests.unit.definitions import step, workflow

from hewer.engine.core.dag import (
    SKIPPED_OUTPUT,
    NewTask,
    aggregate_status,
    decode_output,
    initial_tasks,
    progress,
)
from hewer.engine.core.model import StepKind, TaskSnapshot, TaskStatus

Q, R, C, F, X = (
    TaskStatus.QUEUED,
    TaskStatus.RUNNING,
    TaskStatus.COMPLETED,
    TaskStatus.FAILED,
    TaskStatus.CANCELLED,
)


def task(
    name: str,
    status: TaskStatus,
    *,
    output: str | None = None,
    error: str | None = None,
    skipped: bool = False,
) -> TaskSnapshot:
    return TaskSnapshot(
        id=f"task-{name}",
        step_id=f"step-{name}",
        readable_id=name,
        status=status,
        output=output,
        error=error,
        is_skipped=skipped,
    )


def created(new_tasks: tuple[NewTask, ...]) -> dict[str, tuple[TaskStatus, bool]]:
    return {n.step.readable_id: (n.status, n.skipped) for n in new_tasks}


# a -> b -> c, plus d depending on both a and b (a diamond-ish fan-in)
CHAIN = workflow(step("a"), step("b", "a"), step("c", "b"), step("d", "a", "b"))
ON_FAILURE = step("handler", kind=StepKind.ON_FAILURE, position=9)
WITH_HANDLER = workflow(step("a"), step("b", "a"), ON_FAILURE)


# -- decode_output and aggregate_status --------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "decoded"),
    [
        (None, {}),
        ("", {}),
        ('{"n": 1}', {"n": 1}),
        ("[1, 2]", [1, 2]),
        ('"text"', "text"),
        ("null", None),
        ("not json", "not json"),
    ],
)
def test_decode_output(stored: str | None, decoded: object) -> None:
    assert decode_output(stored) == decoded


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], Q),
        ([C], C),
        ([C, C, C], C),
        ([F, F], F),
        ([X], X),
        ([Q, Q], Q),
        ([R], R),
        ([C, F], F),
        ([C, F, X], F),
        ([F, R], R),  # a sibling failed, but a branch still runs
        ([F, Q], R),
        ([C, R], R),
        ([C, Q], R),
        ([X, Q], R),
        ([C, X], X),
    ],
)
def test_aggregate_status(statuses: list[TaskStatus], expected: TaskStatus) -> None:
    assert aggregate_status(statuses) is expected


# -- starting a run ------------------------------------------------------------------------


def test_initial_tasks_are_the_roots_queued() -> None:
    version = workflow(step("a"), step("b", "a"), step("c"), ON_FAILURE)
    new = initial_tasks(version)
    assert created(new) == {"a": (Q, False), "c": (Q, False)}
    assert all(n.payload_extra == {} for n in new)


def test_on_failure_step_is_not_a_root() -> None:
    assert [s.readable_id for s in WITH_HANDLER.roots] == ["a"]
    assert WITH_HANDLER.on_failure is ON_FAILURE


# -- children ----------------------------------------------------------------------------


def test_nothing_happens_while_the_parent_runs() -> None:
    result = progress(CHAIN, [task("a", R)])
    assert result.new_tasks == ()
    assert (result.run_status, result.finished) == (R, False)


def test_completed_parent_queues_child_with_its_output() -> None:
    result = progress(CHAIN, [task("a", C, output='{"n": 1}')])
    assert created(result.new_tasks) == {"b": (Q, False)}
    (b,) = result.new_tasks
    assert b.payload_extra == {"parents": {"a": {"n": 1}}}
    assert (result.run_status, result.finished) == (R, False)


def test_fan_in_waits_for_every_parent_and_gets_every_output() -> None:
    first = progress(CHAIN, [task("a", C, output='{"n": 1}'), task("b", R)])
    assert first.new_tasks == ()
    second = progress(CHAIN, [task("a", C, output='{"n": 1}'), task("b", C, output='{"m": 2}')])
    assert created(second.new_tasks) == {"c": (Q, False), "d": (Q, False)}
    by_name = {n.step.readable_id: n for n in second.new_tasks}
    assert by_name["d"].payload_extra == {"parents": {"a": {"n": 1}, "b": {"m": 2}}}
    assert by_name["c"].payload_extra == {"parents": {"b": {"m": 2}}}


def test_empty_output_reaches_the_child_as_an_empty_object() -> None:
    result = progress(CHAIN, [task("a", C, output="")])
    (b,) = result.new_tasks
    assert b.payload_extra == {"parents": {"a": {}}}


def test_existing_tasks_are_never_created_again() -> None:
    snapshot = [task("a", C, output="{}"), task("b", Q)]
    assert progress(CHAIN, snapshot).new_tasks == ()


@pytest.mark.parametrize("parent_status", [F, X])
def test_failed_or_cancelled_parent_cancels_everything_downstream(
    parent_status: TaskStatus,
) -> None:
    result = progress(CHAIN, [task("a", parent_status, error="boom")])
    assert created(result.new_tasks) == {"b": (X, False), "c": (X, False), "d": (X, False)}
    assert result.finished
    assert result.run_status is parent_status


def test_one_failed_parent_among_completed_ones_cancels_the_child() -> None:
    result = progress(CHAIN, [task("a", C, output="{}"), task("b", F, error="boom")])
    assert created(result.new_tasks) == {"c": (X, False), "d": (X, False)}
    assert (result.run_status, result.finished) == (F, True)


def test_skipped_parent_skips_its_descendants() -> None:
    result = progress(CHAIN, [task("a", C, output=SKIPPED_OUTPUT, skipped=True)])
    assert created(result.new_tasks) == {"b": (C, True), "c": (C, True), "d": (C, True)}
    assert (result.run_status, result.finished) == (C, True)


def test_failure_wins_over_skip_for_a_child_with_both() -> None:
    version = workflow(step("a"), step("b"), step("c", "a", "b"))
    result = progress(version, [task("a", C, skipped=True), task("b", F, error="e")])
    assert created(result.new_tasks) == {"c": (X, False)}


# -- the on-failure step -----------------------------------------------------------------


def test_on_failure_waits_until_every_other_task_is_final() -> None:
    version = workflow(step("a"), step("b"), ON_FAILURE)
    result = progress(version, [task("a", F, error="boom"), task("b", R)])
    assert result.new_tasks == ()
    assert (result.run_status, result.finished) == (R, False)


def test_on_failure_is_queued_with_the_error_map() -> None:
    result = progress(WITH_HANDLER, [task("a", F, error="boom")])
    assert created(result.new_tasks) == {"b": (X, False), "handler": (Q, False)}
    handler = next(n for n in result.new_tasks if n.step.kind is StepKind.ON_FAILURE)
    assert handler.payload_extra == {"step_run_errors": {"a": "boom"}}
    # the run goes on until the handler has run
    assert (result.run_status, result.finished) == (R, False)


def test_error_map_lists_every_failed_task_and_tolerates_a_missing_message() -> None:
    version = workflow(step("a"), step("b"), step("c"), ON_FAILURE)
    result = progress(
        version, [task("a", F, error="first"), task("b", F, error=None), task("c", C)]
    )
    (handler,) = result.new_tasks
    assert handler.payload_extra == {"step_run_errors": {"a": "first", "b": ""}}


def test_cancellation_alone_does_not_queue_on_failure() -> None:
    result = progress(WITH_HANDLER, [task("a", X)])
    assert created(result.new_tasks) == {"b": (X, False), "handler": (C, True)}
    assert (result.run_status, result.finished) == (X, True)


def test_on_failure_is_skipped_when_everything_succeeded() -> None:
    result = progress(WITH_HANDLER, [task("a", C, output="{}"), task("b", C, output="{}")])
    assert created(result.new_tasks) == {"handler": (C, True)}
    assert (result.run_status, result.finished) == (C, True)


def test_run_ends_failed_once_the_on_failure_step_finished() -> None:
    snapshot = [task("a", F, error="boom"), task("b", X), task("handler", C, output="{}")]
    result = progress(WITH_HANDLER, snapshot)
    assert result.new_tasks == ()
    assert (result.run_status, result.finished) == (F, True)


def test_a_failing_on_failure_step_is_not_in_its_own_error_map() -> None:
    snapshot = [task("a", F, error="boom"), task("b", X), task("handler", F, error="worse")]
    result = progress(WITH_HANDLER, snapshot)
    assert result.new_tasks == ()
    assert (result.run_status, result.finished) == (F, True)


# -- run status while in flight ----------------------------------------------------------


def test_run_is_queued_while_every_task_is_queued() -> None:
    version = workflow(step("a"), step("b"))
    result = progress(version, [task("a", Q), task("b", Q)])
    assert (result.run_status, result.finished) == (Q, False)


def test_run_is_running_once_anything_moved() -> None:
    version = workflow(step("a"), step("b"))
    assert progress(version, [task("a", C), task("b", Q)]).run_status is R
    assert progress(version, [task("a", R), task("b", Q)]).run_status is R


def test_single_task_run_finishes_with_its_task() -> None:
    version = workflow(step("only"))
    for final in (C, F, X):
        result = progress(version, [task("only", final)])
        assert (result.run_status, result.finished, result.new_tasks) == (final, True, ())


def test_skipped_output_is_the_documented_json() -> None:
    assert json.loads(SKIPPED_OUTPUT) == {"skipped": True}
