import pytest

from hewer.engine.core import task_state
from hewer.engine.core.model import FINAL_STATUSES, TaskStatus
from hewer.engine.core.task_state import IllegalTransition, can_move, check_move


def test_every_state_has_its_transitions_listed() -> None:
    assert set(task_state.TRANSITIONS) == set(TaskStatus)


def test_a_waiting_task_is_queued_skipped_or_cancelled_but_never_runs_directly() -> None:
    assert task_state.TRANSITIONS[TaskStatus.WAITING] == {
        TaskStatus.QUEUED,
        TaskStatus.COMPLETED,
        TaskStatus.CANCELLED,
    }
    assert not can_move(TaskStatus.WAITING, TaskStatus.RUNNING)


def test_waiting_holds_no_slot_and_is_not_final() -> None:
    assert TaskStatus.WAITING not in task_state.HOLDS_SLOT
    assert not TaskStatus.WAITING.is_final
    assert TaskStatus.WAITING in task_state.CANCELLABLE


def test_final_states_only_leave_through_a_replay() -> None:
    for state in FINAL_STATUSES:
        assert task_state.TRANSITIONS[state] == {TaskStatus.QUEUED}
    assert {
        TaskStatus.QUEUED,
        TaskStatus.WAITING,
        TaskStatus.RUNNING,
        TaskStatus.EVICTED,
    } == task_state.CANCELLABLE


def test_an_evicted_task_holds_no_slot_and_leaves_by_restore_or_cancel() -> None:
    assert task_state.TRANSITIONS[TaskStatus.EVICTED] == {TaskStatus.QUEUED, TaskStatus.CANCELLED}
    assert TaskStatus.EVICTED not in task_state.HOLDS_SLOT
    assert can_move(TaskStatus.RUNNING, TaskStatus.EVICTED)
    assert not can_move(TaskStatus.QUEUED, TaskStatus.EVICTED)


def test_an_illegal_move_is_refused_with_both_names() -> None:
    with pytest.raises(IllegalTransition, match="COMPLETED to RUNNING"):
        check_move(TaskStatus.COMPLETED, TaskStatus.RUNNING)
    check_move(TaskStatus.QUEUED, TaskStatus.RUNNING)
