"""Validating a workflow registration and turning it into step definitions.

Input is the registration request as a plain dict (the proto rendered with its field names),
so this module stays free of protobuf and I/O. The dict itself is stored verbatim.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hewer.engine.core.batches import InvalidBatchConfig, parse_batch_config
from hewer.engine.core.concurrency import ConcurrencySpec, InvalidConcurrency, parse_specs
from hewer.engine.core.conditions import Condition, InvalidCondition, parse_conditions
from hewer.engine.core.durations import InvalidDuration, parse_duration_or
from hewer.engine.core.model import StepKind, StepSpec
from hewer.engine.core.placement import STICKY_STRATEGIES, InvalidLabel, parse_desired_labels
from hewer.engine.core.rate_limits import InvalidRateLimit, TaskRateLimit, parse_task_rate_limits

DEFAULT_TIMEOUT_SECONDS = 60
DEFAULT_SCHEDULE_TIMEOUT_SECONDS = 300
_ACTION = re.compile(r"^[^:\s]+:[^:\s]+$")


class InvalidDefinition(ValueError):
    """A registration the engine refuses; the message names the offending field."""


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    name: str
    description: str
    version: str
    default_priority: int
    sticky: str | None
    event_triggers: tuple[str, ...]
    steps: tuple[StepSpec, ...]
    checksum: str
    unenforced: tuple[str, ...]
    concurrency: tuple[ConcurrencySpec, ...] = ()


def checksum(definition: Mapping[str, Any]) -> str:
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def parse_workflow(definition: Mapping[str, Any]) -> WorkflowSpec:
    name = str(definition.get("name", "")).strip()
    if not name:
        raise InvalidDefinition("workflow name is required")
    tasks = list(definition.get("tasks", []))
    if not tasks:
        raise InvalidDefinition(f"workflow {name!r} has no tasks")
    # absent means 1; an explicit 0 is out of range like 4 (the SDK never sends it unasked)
    raw_priority = definition.get("default_priority")
    priority = 1 if raw_priority is None else int(raw_priority)
    if not 1 <= priority <= 3:
        raise InvalidDefinition(f"workflow {name!r}: default_priority must be 1..3, got {priority}")

    steps = [_parse_step(name, t, position=i, kind=StepKind.TASK) for i, t in enumerate(tasks)]
    if definition.get("on_failure_task"):
        steps.append(
            _parse_step(
                name,
                definition["on_failure_task"],
                position=len(steps),
                kind=StepKind.ON_FAILURE,
            )
        )
    _check_graph(name, steps)
    concurrency = workflow_concurrency(definition, where=f"workflow {name!r}")
    sticky = definition.get("sticky")
    if sticky and sticky not in STICKY_STRATEGIES:
        raise InvalidDefinition(
            f"workflow {name!r}: sticky must be one of {', '.join(STICKY_STRATEGIES)}, "
            f"got {sticky!r}"
        )
    return WorkflowSpec(
        name=name,
        description=str(definition.get("description", "")),
        version=str(definition.get("version", "")),
        default_priority=priority,
        sticky=str(sticky) if sticky else None,
        event_triggers=tuple(str(k) for k in definition.get("event_triggers", [])),
        steps=tuple(steps),
        checksum=checksum(definition),
        unenforced=tuple(unenforced_settings(definition)),
        concurrency=concurrency,
    )


@dataclass(frozen=True, slots=True)
class StoredPolicies:
    """The scheduling policies of a stored registration, re-read when a version loads."""

    concurrency: tuple[ConcurrencySpec, ...]
    step_concurrency: dict[str, tuple[ConcurrencySpec, ...]]
    step_rate_limits: dict[str, tuple[TaskRateLimit, ...]]
    step_conditions: dict[str, tuple[Condition, ...]] = field(default_factory=dict)


def stored_policies(definition: Mapping[str, Any]) -> StoredPolicies:
    name = str(definition.get("name", ""))
    tasks = list(definition.get("tasks", []))
    if definition.get("on_failure_task"):
        tasks.append(definition["on_failure_task"])
    step_concurrency: dict[str, tuple[ConcurrencySpec, ...]] = {}
    step_rate_limits: dict[str, tuple[TaskRateLimit, ...]] = {}
    step_conditions: dict[str, tuple[Condition, ...]] = {}
    for task in tasks:
        readable_id = str(task.get("readable_id", "")).strip()
        where = f"task {readable_id!r}"
        try:
            specs = parse_specs(task.get("concurrency"), where=where)
            limits = parse_task_rate_limits(task.get("rate_limits"), where=where)
            conditions = _conditions(task, where=where)
        except (InvalidConcurrency, InvalidRateLimit, InvalidCondition) as exc:
            raise InvalidDefinition(str(exc)) from None
        if conditions:
            step_conditions[readable_id] = conditions
        if specs:
            step_concurrency[readable_id] = specs
        if limits:
            step_rate_limits[readable_id] = limits
    return StoredPolicies(
        concurrency=workflow_concurrency(definition, where=f"workflow {name!r}"),
        step_concurrency=step_concurrency,
        step_rate_limits=step_rate_limits,
        step_conditions=step_conditions,
    )


def _conditions(task: Mapping[str, Any], *, where: str) -> tuple[Condition, ...]:
    parents = tuple(str(p) for p in task.get("parents", []))
    return parse_conditions(task.get("conditions"), parents=parents, where=where)


def workflow_concurrency(
    definition: Mapping[str, Any], *, where: str
) -> tuple[ConcurrencySpec, ...]:
    """Workflow-level strategies: ``concurrency_arr`` (newer SDKs) or ``concurrency``."""
    raw = definition.get("concurrency_arr") or definition.get("concurrency")
    try:
        return parse_specs(raw, where=where)
    except InvalidConcurrency as exc:
        raise InvalidDefinition(str(exc)) from None


def _parse_step(
    workflow: str, task: Mapping[str, Any], *, position: int, kind: StepKind
) -> StepSpec:
    readable_id = str(task.get("readable_id", "")).strip()
    where = f"workflow {workflow!r} task {readable_id or position!r}"
    if not readable_id:
        raise InvalidDefinition(f"{where}: readable_id is required")
    action = str(task.get("action", "")).strip()
    if not _ACTION.match(action):
        raise InvalidDefinition(f"{where}: action must look like 'service:task', got {action!r}")
    try:
        timeout = parse_duration_or(str(task.get("timeout", "")), default=DEFAULT_TIMEOUT_SECONDS)
        schedule_timeout = parse_duration_or(
            str(task.get("schedule_timeout", "")), default=DEFAULT_SCHEDULE_TIMEOUT_SECONDS
        )
    except InvalidDuration as exc:
        raise InvalidDefinition(f"{where}: {exc}") from None
    if timeout <= 0 or schedule_timeout <= 0:
        raise InvalidDefinition(f"{where}: timeouts must be positive")
    retries = int(task.get("retries", 0))
    if retries < 0:
        raise InvalidDefinition(f"{where}: retries must be >= 0")
    factor = task.get("backoff_factor")
    max_seconds = task.get("backoff_max_seconds")
    is_durable = bool(task.get("is_durable", False))
    requests = {str(k): int(v) for k, v in dict(task.get("slot_requests", {})).items()}
    if not requests:
        requests = {"durable": 1} if is_durable else {"default": 1}
    if any(v <= 0 for v in requests.values()):
        raise InvalidDefinition(f"{where}: slot_requests units must be positive")
    try:
        concurrency = parse_specs(task.get("concurrency"), where=where)
        rate_limits = parse_task_rate_limits(task.get("rate_limits"), where=where)
        labels = parse_desired_labels(task.get("worker_labels"), where=where)
        conditions = _conditions(task, where=where)
    except (InvalidConcurrency, InvalidRateLimit, InvalidLabel, InvalidCondition) as exc:
        raise InvalidDefinition(str(exc)) from None
    try:
        batch = parse_batch_config(task.get("batch"))
    except InvalidBatchConfig as exc:
        raise InvalidDefinition(f"{where}: {exc}") from None
    return StepSpec(
        readable_id=readable_id,
        action_id=action,
        kind=kind,
        position=position,
        parents=tuple(str(p) for p in task.get("parents", [])),
        timeout_seconds=max(1, round(timeout)),
        schedule_timeout_seconds=max(1, round(schedule_timeout)),
        retries=retries,
        backoff_factor=float(factor) if factor is not None else None,
        backoff_max_seconds=int(max_seconds) if max_seconds is not None else None,
        is_durable=is_durable,
        slot_requests=requests,
        concurrency=concurrency,
        rate_limits=rate_limits,
        desired_labels=labels,
        batch=batch,
        conditions=conditions,
    )


def _check_graph(workflow: str, steps: list[StepSpec]) -> None:
    names = [s.readable_id for s in steps]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidDefinition(f"workflow {workflow!r}: duplicate task names {duplicates}")
    known = set(names)
    for step in steps:
        if step.kind is StepKind.ON_FAILURE and step.parents:
            raise InvalidDefinition(f"workflow {workflow!r}: the on-failure task has parents")
        for parent in step.parents:
            if parent not in known:
                raise InvalidDefinition(
                    f"workflow {workflow!r} task {step.readable_id!r}: unknown parent {parent!r}"
                )
    parents = {s.readable_id: s.parents for s in steps}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == 2:
            return
        if state.get(node) == 1:
            cycle = [*path[path.index(node) :], node]
            raise InvalidDefinition(f"workflow {workflow!r}: cycle {' -> '.join(cycle)}")
        state[node] = 1
        for parent in parents[node]:
            visit(parent, [*path, node])
        state[node] = 2

    for name in names:
        visit(name, [])


def unenforced_settings(definition: Mapping[str, Any]) -> list[str]:
    """Settings a registration may carry that this engine accepts but does not enforce yet.

    Registration keeps succeeding (the official SDK worker registers every feature and exits
    if one registration fails), so what is listed here is shown where users look instead:
    the REST workflow version (``notEnforced``), the Workflow resource's ``Enforced``
    condition and a Warning event, and the engine log.

    Every setting the protocol carries is enforced today (DAG conditions on any task, their
    look-back included), so the list is empty; a setting accepted before it is enforced
    belongs here, never silently ignored.
    """
    return []
