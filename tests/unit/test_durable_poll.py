"""A worker's poll of the durable nodes it waits for (``core.durable.answer_poll``)."""

from __future__ import annotations

from dataclasses import dataclass

from hewer.engine.core.durable import answer_poll

A, B, C = "task-a", "task-b", "task-c"


@dataclass(frozen=True)
class Waited:
    task_id: str
    invocation: int
    branch_id: int
    node_id: int


def test_only_tasks_with_a_satisfied_waited_node_are_handed_anything() -> None:
    waiting = [Waited(A, 1, 1, 2), Waited(A, 1, 1, 3), Waited(B, 2, 1, 1)]
    answer = answer_poll(waiting, current={A: 1, B: 2}, satisfied={(A, 1, 3)})
    # every node A waits for is asked again, so a lost completion is re-sent
    assert answer.resend == {A: frozenset({(1, 2), (1, 3)})}
    assert answer.stale == []


def test_a_node_satisfied_on_another_branch_is_not_the_one_waited_for() -> None:
    answer = answer_poll([Waited(A, 1, 2, 3)], current={A: 1}, satisfied={(A, 1, 3)})
    assert answer.resend == {}


def test_older_invocations_are_stale_and_never_handed_anything() -> None:
    waiting = [Waited(A, 1, 1, 1), Waited(A, 1, 1, 2), Waited(B, 3, 1, 1)]
    answer = answer_poll(waiting, current={A: 2, B: 3}, satisfied={(A, 1, 1), (B, 1, 1)})
    assert answer.stale == [(A, 1)]
    assert answer.resend == {B: frozenset({(1, 1)})}


def test_tasks_the_engine_does_not_know_are_ignored() -> None:
    answer = answer_poll([Waited(C, 1, 1, 1)], current={}, satisfied=set())
    assert answer.stale == [] and answer.resend == {}
