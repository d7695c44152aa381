"""The task state machine: every state a task row can be in and the moves between them.

The states are :class:`~hewer.engine.core.model.TaskStatus` (the names stored in
``tasks.status``); this module is the one place that says which moves are allowed, as data,
so a new state (WAITING for DAG conditions, EVICTED for durable tasks) cannot be
forgotten in one code path. SQL that writes a status takes the name from here as a
parameter instead of spelling a literal.

* QUEUED    -> RUNNING (assigned and started), CANCELLED, FAILED (never admitted or
               scheduled in time)
* WAITING   -> QUEUED (its ``wait_for`` conditions are met), COMPLETED (``skip_if``
               met: skipped), CANCELLED (``cancel_if`` met, or the run is cancelled).
               A waiting task holds no worker slot and has no queue item.
* RUNNING   -> COMPLETED, FAILED, CANCELLED, QUEUED (a retry or a lost attempt),
               EVICTED (a durable task's worker evicted it while it waits)
* EVICTED   -> QUEUED (restored: its wait was satisfied, or REST restore; or replayed),
               CANCELLED. An evicted task holds no slot; its log is replayed on restore.
* final states (COMPLETED, FAILED, CANCELLED) -> QUEUED only through an explicit replay.
"""

from __future__ import annotations

from hewer.engine.core.model import TaskStatus

QUEUED = TaskStatus.QUEUED
WAITING = TaskStatus.WAITING
RUNNING = TaskStatus.RUNNING
EVICTED = TaskStatus.EVICTED
COMPLETED = TaskStatus.COMPLETED
FAILED = TaskStatus.FAILED
CANCELLED = TaskStatus.CANCELLED

TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    QUEUED: frozenset({RUNNING, CANCELLED, FAILED}),
    WAITING: frozenset({QUEUED, COMPLETED, CANCELLED}),
    RUNNING: frozenset({COMPLETED, FAILED, CANCELLED, QUEUED, EVICTED}),
    EVICTED: frozenset({QUEUED, CANCELLED}),
    COMPLETED: frozenset({QUEUED}),
    FAILED: frozenset({QUEUED}),
    CANCELLED: frozenset({QUEUED}),
}

# the states a new task row may be created in (a DAG child decided at creation)
INITIAL_STATES = frozenset({QUEUED, WAITING, COMPLETED, CANCELLED, FAILED})
# the states in which a cancellation applies (the rest are final already)
CANCELLABLE = frozenset(s for s, targets in TRANSITIONS.items() if CANCELLED in targets)
# states that hold a worker slot
HOLDS_SLOT = frozenset({RUNNING})


class IllegalTransition(ValueError):
    """A move the state machine does not allow."""


def can_move(source: TaskStatus, target: TaskStatus) -> bool:
    return target in TRANSITIONS[source]


def check_move(source: TaskStatus, target: TaskStatus) -> None:
    if not can_move(source, target):
        raise IllegalTransition(f"a task cannot move from {source.value} to {target.value}")
