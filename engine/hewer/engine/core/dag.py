"""DAG progression: which tasks of a run to create next, and when the run is over.

Only root tasks exist when a run is triggered: QUEUED, or WAITING on their conditions (a
task without parents waits on its sleeps and user events from its creation, the sleeps
measured from then). Each time a task reaches a final state the run's snapshot is fed here,
and this decides, for every step not yet created:

* all parents completed          -> create it QUEUED with the parents' outputs;
* a parent was skipped           -> create it skipped (COMPLETED, output {"skipped": true});
* a parent failed or was cancelled -> create it CANCELLED (it never runs);
* the on-failure step, once every other step is final: QUEUED (or WAITING on its own
  conditions) with the error map when something failed, otherwise skipped.

The run is finished when every step exists and is final.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hewer.engine.core.conditions import Action, Condition, ConditionKind, decide_at_parents
from hewer.engine.core.model import (
    StepDef,
    StepKind,
    TaskSnapshot,
    TaskStatus,
    WorkflowVersionDef,
)

SKIPPED_OUTPUT = '{"skipped": true}'


@dataclass(frozen=True, slots=True)
class NewTask:
    step: StepDef
    status: TaskStatus
    skipped: bool = False
    payload_extra: dict[str, Any] = field(default_factory=dict)
    # WAITING: the sleep and user-event conditions to register in the match table
    pending: tuple[Condition, ...] = ()


@dataclass(frozen=True, slots=True)
class Progress:
    new_tasks: tuple[NewTask, ...]
    run_status: TaskStatus
    finished: bool


def decode_output(output: str | None) -> Any:
    """A task output as stored (raw JSON text; ``""`` when the SDK sent a falsy value)."""
    if not output:
        return {}
    try:
        return json.loads(output)
    except ValueError:
        return output


def aggregate_status(statuses: list[TaskStatus]) -> TaskStatus:
    """A run's status from its tasks' statuses.

    While any task is queued or running the run is QUEUED (nothing started yet) or RUNNING,
    even if a sibling already failed: independent branches still run, and a client polling
    for a final status must not stop early. Once every task is final: one shared status
    wins, else FAILED over CANCELLED (a mix with COMPLETED).
    """
    unique = set(statuses)
    if not unique or unique == {TaskStatus.QUEUED}:
        return TaskStatus.QUEUED
    if unique & {TaskStatus.QUEUED, TaskStatus.WAITING, TaskStatus.RUNNING, TaskStatus.EVICTED}:
        return TaskStatus.RUNNING
    if len(unique) == 1:
        return unique.pop()
    if TaskStatus.FAILED in unique:
        return TaskStatus.FAILED
    return TaskStatus.CANCELLED


def initial_tasks(version: WorkflowVersionDef) -> tuple[NewTask, ...]:
    """The tasks a new run starts with: its roots, queued or waiting on their conditions."""
    return tuple(_parentless(s) for s in version.roots)


def starts_waiting(version: WorkflowVersionDef) -> bool:
    """Whether a new run has a root that waits on conditions (so not every root is queued)."""
    return any(s.conditions for s in version.roots)


def _parentless(step: StepDef, payload_extra: dict[str, Any] | None = None) -> NewTask:
    """A task without parents: it waits on all its conditions (parsing refuses a
    parent-output condition there), or is queued at once when it has none."""
    extra = payload_extra or {}
    if step.conditions:
        return NewTask(
            step=step, status=TaskStatus.WAITING, payload_extra=extra, pending=step.conditions
        )
    return NewTask(step=step, status=TaskStatus.QUEUED, payload_extra=extra)


def progress(version: WorkflowVersionDef, tasks: list[TaskSnapshot]) -> Progress:
    """Decide the next tasks of a run from its current snapshot (see the module docstring)."""
    by_readable: dict[str, TaskSnapshot] = {t.readable_id: t for t in tasks}
    created: list[NewTask] = []

    def state(readable_id: str) -> tuple[TaskStatus, bool, str | None] | None:
        if readable_id in by_readable:
            t = by_readable[readable_id]
            return t.status, t.is_skipped, t.output
        for n in created:
            if n.step.readable_id == readable_id:
                return n.status, n.skipped, SKIPPED_OUTPUT if n.skipped else None
        return None

    # Creating a cancelled or skipped task can unlock its own children, so iterate until
    # nothing changes; steps are few, so the quadratic walk is cheap.
    changed = True
    while changed:
        changed = False
        for step in version.steps:
            if step.kind is not StepKind.TASK or state(step.readable_id) is not None:
                continue
            new = _decide_child(step, state)
            if new is not None:
                created.append(new)
                changed = True

    on_failure = version.on_failure
    task_steps = [s for s in version.steps if s.kind is StepKind.TASK]
    others = [state(s.readable_id) for s in task_steps]
    all_final = all(o is not None and o[0].is_final for o in others)
    if on_failure is not None and state(on_failure.readable_id) is None and all_final:
        errors = {
            t.readable_id: t.error or ""
            for t in tasks
            if t.status is TaskStatus.FAILED and t.step_id != on_failure.id
        }
        if errors:
            created.append(_parentless(on_failure, {"step_run_errors": errors}))
        else:
            created.append(NewTask(step=on_failure, status=TaskStatus.COMPLETED, skipped=True))

    statuses = [t.status for t in tasks] + [n.status for n in created]
    finished = all(state(s.readable_id) is not None for s in version.steps) and all(
        s.is_final for s in statuses
    )
    # steps not created yet are pending work: until then the run is not over
    run_status = aggregate_status(statuses if finished else [*statuses, TaskStatus.QUEUED])
    return Progress(new_tasks=tuple(created), run_status=run_status, finished=finished)


def _decide_child(step: StepDef, state: Any) -> NewTask | None:
    parent_states = [state(p) for p in step.parents]
    if any(p is None or not p[0].is_final for p in parent_states):
        return None
    if any(p[0] in (TaskStatus.FAILED, TaskStatus.CANCELLED) for p in parent_states):
        return NewTask(step=step, status=TaskStatus.CANCELLED)
    # A skipped parent skips its child only when every parent was skipped (each parent's
    # skip is its own or-group, as in Hatchet): a join after a skipped branch still runs.
    # A skip_if on a parent's output replaces that default.
    skip_overridden = any(
        c.kind is ConditionKind.PARENT and c.action is Action.SKIP for c in step.conditions
    )
    if all(p[1] for p in parent_states) and not skip_overridden:
        return NewTask(step=step, status=TaskStatus.COMPLETED, skipped=True)
    parents = {
        name: decode_output(p[2]) for name, p in zip(step.parents, parent_states, strict=True)
    }
    extra = {"parents": parents}
    if not step.conditions:
        return NewTask(step=step, status=TaskStatus.QUEUED, payload_extra=extra)
    decision = decide_at_parents(step.conditions, parents)
    if decision.action is Action.SKIP:
        return NewTask(step=step, status=TaskStatus.COMPLETED, skipped=True)
    if decision.action is Action.CANCEL:
        return NewTask(step=step, status=TaskStatus.CANCELLED)
    if decision.action is Action.QUEUE:
        return NewTask(step=step, status=TaskStatus.QUEUED, payload_extra=extra)
    return NewTask(
        step=step, status=TaskStatus.WAITING, payload_extra=extra, pending=decision.pending
    )
