"""Database rows to the SDK's response models (runs, tasks, task events, run shape).

Responses are built with ``hatchet_sdk``'s own pydantic models because the Python client
validates every body with them: a missing required field or an unknown enum value would
make the SDK raise. Everything here is pure so that it can be unit-tested without a server.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

from hatchet_sdk.clients.rest.models.api_resource_meta import APIResourceMeta
from hatchet_sdk.clients.rest.models.pagination_response import PaginationResponse
from hatchet_sdk.clients.rest.models.v1_task_event import V1TaskEvent
from hatchet_sdk.clients.rest.models.v1_task_event_type import V1TaskEventType
from hatchet_sdk.clients.rest.models.v1_task_status import V1TaskStatus
from hatchet_sdk.clients.rest.models.v1_task_summary import V1TaskSummary
from hatchet_sdk.clients.rest.models.v1_workflow_run import V1WorkflowRun
from hatchet_sdk.clients.rest.models.v1_workflow_type import V1WorkflowType
from hatchet_sdk.clients.rest.models.workflow_run_shape_item_for_workflow_run_details import (
    WorkflowRunShapeItemForWorkflowRunDetails,
)
from pydantic import BaseModel


class Row(Protocol):
    """An asyncpg ``Record`` or, in tests, a plain dict."""

    def __getitem__(self, key: str, /) -> Any: ...


# Our task_events.event_type values that differ from Hatchet's V1TaskEventType names; the
# others (QUEUED, ASSIGNED, STARTED, FAILED, RETRYING, CANCELLED, ...) are spelled alike.
_EVENT_TYPE_ALIASES = {"COMPLETED": "FINISHED", "SUCCEEDED": "FINISHED"}
# Events whose message is the error text (as the worker sent it) rather than a remark.
_ERROR_EVENTS = frozenset({"FAILED", "TIMED_OUT"})
_SHAPE_NAMESPACE = uuid.UUID("6f0c1a52-9a4e-4f4e-9d38-2c1b1a0e7d11")


def dump(model: BaseModel) -> dict[str, Any]:
    """The camelCase JSON form the SDK expects (``None`` fields left out)."""
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


def meta(
    resource_id: Any, created_at: datetime, updated_at: datetime | None = None
) -> APIResourceMeta:
    return APIResourceMeta(
        id=str(resource_id), createdAt=created_at, updatedAt=updated_at or created_at
    )


def int_id(external_id: Any) -> int:
    """A stable positive 31-bit integer for a UUID: the models want an int ``taskId``."""
    return uuid.UUID(str(external_id)).int & 0x7FFFFFFF


def task_status(value: str) -> V1TaskStatus:
    # Hatchet's API has no WAITING: a task waiting for its DAG conditions is not running yet;
    # nor EVICTED: an evicted durable task is RUNNING with ``isEvicted`` (see is_evicted)
    return V1TaskStatus(_API_STATUS.get(value, value))


_API_STATUS = {"WAITING": "QUEUED", "EVICTED": "RUNNING"}


def is_evicted(value: str) -> bool:
    return value == "EVICTED"


def event_type(value: str) -> V1TaskEventType | None:
    """Hatchet's name for one of our event types; None for types the SDK would reject."""
    name = _EVENT_TYPE_ALIASES.get(value, value)
    try:
        return V1TaskEventType(name)
    except ValueError:
        return None


def parse_output(text: str | None) -> dict[str, Any]:
    """A task's output as an object. Empty output ('' or null) is ``{}``; so is anything
    that is not a JSON object, since the models only accept objects."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def as_object(value: Any) -> dict[str, Any]:
    """A jsonb column expected to hold an object (the codec decodes it; text is tolerated)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return dict(value) if isinstance(value, dict) else {}


def duration_ms(started: datetime | None, finished: datetime | None) -> int | None:
    if started is None or finished is None:
        return None
    return max(0, int((finished - started).total_seconds() * 1000))


def display_name(name: str, created_at: datetime) -> str:
    """``<name>-<unix seconds>``, the pattern Hatchet's dashboard shows."""
    return f"{name}-{int(created_at.timestamp())}"


def pagination(*, total: int, offset: int, limit: int) -> PaginationResponse:
    num_pages = max(1, math.ceil(total / limit)) if limit > 0 else 1
    current = offset // limit + 1 if limit > 0 else 1
    return PaginationResponse(
        current_page=current, num_pages=num_pages, next_page=min(current + 1, num_pages)
    )


def workflow_type(task_steps: int) -> V1WorkflowType:
    return V1WorkflowType.DAG if task_steps > 1 else V1WorkflowType.TASK


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _error(value: str | None) -> str | None:
    return value if value else None


def task_summary(row: Row, *, include_payloads: bool = True) -> V1TaskSummary:
    """One task (a row of ``rest_tasks_full``)."""
    created_at: datetime = row["created_at"]
    started_at: datetime | None = row["started_at"]
    finished_at: datetime | None = row["finished_at"]
    retry_count = int(row["retry_count"])
    return V1TaskSummary(
        metadata=meta(row["id"], created_at, finished_at or started_at),
        actionId=row["action_id"],
        retryCount=retry_count,
        attempt=retry_count + 1,
        additionalMetadata=as_object(row["additional_metadata"]),
        createdAt=created_at,
        displayName=display_name(row["readable_id"], created_at),
        duration=duration_ms(started_at, finished_at),
        isDurable=bool(row["is_durable"]),
        isEvicted=is_evicted(row["status"]),
        errorMessage=_error(row["error"]),
        finishedAt=finished_at,
        input=as_object(row["input"]) if include_payloads else {},
        numSpawnedChildren=int(row["num_children"]),
        output=parse_output(row["output"]) if include_payloads else {},
        status=task_status(row["status"]),
        startedAt=started_at,
        stepId=str(row["step_id"]),
        taskExternalId=str(row["id"]),
        taskId=int_id(row["id"]),
        taskInsertedAt=created_at,
        tenantId=str(row["tenant_id"]),
        type=workflow_type(int(row["task_steps"])),
        workflowId=str(row["workflow_id"]),
        workflowName=row["workflow_name"],
        workflowRunExternalId=str(row["workflow_run_id"]),
        workflowVersionId=str(row["workflow_version_id"]),
        parentTaskExternalId=_opt_str(row["parent_task_id"]),
    )


def primary_task(tasks: Sequence[Row]) -> Row | None:
    """The task a single-task run stands for (its on-failure task, if any, comes later)."""
    return min(tasks, key=lambda t: int(t["position"]), default=None)


def run_output(run: Row, tasks: Sequence[Row]) -> dict[str, Any]:
    """A single-task run's output is its task's; a DAG's maps step names to outputs."""
    if int(run["task_steps"]) <= 1:
        task = primary_task(tasks)
        return {} if task is None else parse_output(task["output"])
    return {
        t["readable_id"]: parse_output(t["output"]) for t in tasks if t["status"] == "COMPLETED"
    }


def run_error(tasks: Iterable[Row]) -> str | None:
    for t in tasks:
        if t["status"] == "FAILED" and t["error"]:
            return str(t["error"])
    return None


def run_summary(run: Row, tasks: Sequence[Row], *, include_payloads: bool = True) -> V1TaskSummary:
    """A row of the run listing: a single-task run is its task; a DAG lists its tasks as
    ``children``."""
    if int(run["task_steps"]) <= 1:
        task = primary_task(tasks)
        if task is not None:
            return task_summary(task, include_payloads=include_payloads)
    created_at: datetime = run["created_at"]
    children = [task_summary(t, include_payloads=include_payloads) for t in tasks]
    return V1TaskSummary(
        metadata=meta(run["id"], created_at, run["finished_at"] or run["started_at"]),
        additionalMetadata=as_object(run["additional_metadata"]),
        children=children,
        createdAt=created_at,
        displayName=display_name(run["workflow_name"], created_at),
        duration=duration_ms(run["started_at"], run["finished_at"]),
        errorMessage=run_error(tasks),
        finishedAt=run["finished_at"],
        input=as_object(run["input"]) if include_payloads else {},
        numSpawnedChildren=sum(int(t["num_children"]) for t in tasks),
        output=run_output(run, tasks) if include_payloads else {},
        status=task_status(run["status"]),
        startedAt=run["started_at"],
        taskExternalId=str(run["id"]),
        taskId=int_id(run["id"]),
        taskInsertedAt=created_at,
        tenantId=str(run["tenant_id"]),
        type=workflow_type(int(run["task_steps"])),
        workflowId=str(run["workflow_id"]),
        workflowName=run["workflow_name"],
        workflowRunExternalId=str(run["id"]),
        workflowVersionId=str(run["workflow_version_id"]),
        parentTaskExternalId=_opt_str(run["parent_task_id"]),
    )


def workflow_run(run: Row, tasks: Sequence[Row]) -> V1WorkflowRun:
    created_at: datetime = run["created_at"]
    return V1WorkflowRun(
        metadata=meta(run["id"], created_at, run["finished_at"] or run["started_at"]),
        status=task_status(run["status"]),
        startedAt=run["started_at"],
        finishedAt=run["finished_at"],
        duration=duration_ms(run["started_at"], run["finished_at"]),
        tenantId=str(run["tenant_id"]),
        additionalMetadata=as_object(run["additional_metadata"]),
        displayName=display_name(run["workflow_name"], created_at),
        workflowId=str(run["workflow_id"]),
        output=run_output(run, tasks),
        errorMessage=run_error(tasks),
        workflowVersionId=str(run["workflow_version_id"]),
        input=as_object(run["input"]),
        createdAt=created_at,
        parentTaskExternalId=_opt_str(run["parent_task_id"]),
    )


def task_event(row: Row) -> V1TaskEvent | None:
    """A row of ``rest_run_task_events``; None for event types the SDK does not know."""
    kind = event_type(row["event_type"])
    if kind is None:
        return None
    retry_count = int(row["retry_count"])
    message: str = row["message"] or ""
    is_error = row["event_type"] in _ERROR_EVENTS
    return V1TaskEvent(
        id=int(row["id"]),
        taskId=str(row["task_id"]),
        timestamp=row["created_at"],
        eventType=kind,
        message="" if is_error else message,
        errorMessage=(message or None) if is_error else None,
        output=row["output"] or None,
        workerId=_opt_str(row["worker_id"]),
        taskDisplayName=display_name(row["readable_id"], row["task_created_at"]),
        retryCount=retry_count,
        attempt=retry_count + 1,
    )


def shape(
    run_id: str, steps: Sequence[Row], tasks: Sequence[Row]
) -> list[WorkflowRunShapeItemForWorkflowRunDetails]:
    """Every step of the run's version, including steps whose task does not exist yet.

    Such a step gets a placeholder task id derived from (run, step), so it is stable across
    calls; the model requires one.
    """
    task_of_step = {str(t["step_id"]): str(t["id"]) for t in tasks}
    id_of_name = {s["readable_id"]: str(s["id"]) for s in steps}
    children: dict[str, list[str]] = {str(s["id"]): [] for s in steps}
    for s in steps:
        for parent in s["parents"] or ():
            parent_id = id_of_name.get(parent)
            if parent_id is not None:
                children[parent_id].append(str(s["id"]))
    items = []
    for s in steps:
        step_id = str(s["id"])
        task_id = task_of_step.get(step_id) or str(
            uuid.uuid5(_SHAPE_NAMESPACE, f"{run_id}/{step_id}")
        )
        items.append(
            WorkflowRunShapeItemForWorkflowRunDetails(
                taskExternalId=task_id,
                stepId=step_id,
                childrenStepIds=children[step_id],
                taskName=s["readable_id"],
            )
        )
    return items
