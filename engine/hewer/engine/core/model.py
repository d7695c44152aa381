"""The engine's vocabulary: statuses, step definitions and run snapshots (pure data)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hewer.engine.core.placement import DesiredLabel

from hewer.engine.core.batches import BatchConfig
from hewer.engine.core.concurrency import ConcurrencySpec
from hewer.engine.core.conditions import Condition
from hewer.engine.core.rate_limits import TaskRateLimit


class TaskStatus(StrEnum):
    QUEUED = "QUEUED"
    WAITING = "WAITING"  # DAG conditions pending (core.task_state); no slot, no queue item
    RUNNING = "RUNNING"
    EVICTED = "EVICTED"  # a durable task waiting off its worker (core.task_state); no slot
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


class StepKind(StrEnum):
    TASK = "task"
    ON_FAILURE = "on_failure"


@dataclass(frozen=True, slots=True, kw_only=True)
class StepSpec:
    """One task of a workflow as registered (validated, defaults applied)."""

    readable_id: str
    action_id: str
    kind: StepKind
    position: int
    parents: tuple[str, ...]
    timeout_seconds: int
    schedule_timeout_seconds: int
    retries: int
    backoff_factor: float | None
    backoff_max_seconds: int | None
    is_durable: bool
    slot_requests: dict[str, int] = field(default_factory=lambda: {"default": 1})
    concurrency: tuple[ConcurrencySpec, ...] = ()
    rate_limits: tuple[TaskRateLimit, ...] = ()
    # desired worker labels from registration (a trigger's own labels replace them)
    desired_labels: tuple[DesiredLabel, ...] = ()
    batch: BatchConfig | None = None  # a batch task (core/batches.py)
    conditions: tuple[Condition, ...] = ()  # wait_for / skip_if / cancel_if (core/conditions.py)


@dataclass(frozen=True, slots=True, kw_only=True)
class StepDef(StepSpec):
    """A stored step: its spec plus the id the engine gave it."""

    id: str


@dataclass(frozen=True, slots=True)
class WorkflowVersionDef:
    """An immutable workflow version: cached freely once loaded."""

    id: str
    workflow_id: str
    workflow_name: str
    default_priority: int
    sticky: str | None
    steps: tuple[StepDef, ...]
    # workflow-level strategies; a single-task workflow applies them to its task
    concurrency: tuple[ConcurrencySpec, ...] = ()

    def step(self, readable_id: str) -> StepDef:
        for step in self.steps:
            if step.readable_id == readable_id:
                return step
        raise KeyError(readable_id)

    def step_by_id(self, step_id: str) -> StepDef:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    @property
    def roots(self) -> tuple[StepDef, ...]:
        return tuple(s for s in self.steps if s.kind is StepKind.TASK and not s.parents)

    @property
    def on_failure(self) -> StepDef | None:
        return next((s for s in self.steps if s.kind is StepKind.ON_FAILURE), None)

    @property
    def is_single_task(self) -> bool:
        return len([s for s in self.steps if s.kind is StepKind.TASK]) == 1


@dataclass(frozen=True, slots=True)
class TaskSnapshot:
    """The state of one task of a run, as DAG progression needs it."""

    id: str
    step_id: str
    readable_id: str
    status: TaskStatus
    output: str | None
    error: str | None
    is_skipped: bool = False
    # the worker that ran it (sticky DAG children inherit their first parent's)
    worker_id: str | None = None
