"""The messages and rows a task outcome produces: task events, bus messages, errors.

Helpers shared by the lifecycle's outcome paths (single and batched) and by the services
that move one task between states (waiting, evicted, restored). All are pure but
``record_task_event``, which writes the one event it builds.
"""

from __future__ import annotations

import json
from typing import Any

from hewer.engine.core.model import TaskStatus
from hewer.engine.db.repository import Conn, Record, Repository, TaskEvent

INLINE_OUTPUT_LIMIT = 4000  # bigger outputs are left out of live run events


def opt(value: Any) -> str | None:
    return None if value is None else str(value)


def slot_requests(value: Any) -> dict[str, int]:
    raw = json.loads(value) if isinstance(value, str) else value
    return {str(k): int(v) for k, v in dict(raw).items()}


def task_event(
    row: Record,
    event_type: str,
    *,
    message: str = "",
    output: str | None = None,
    retry_count: int | None = None,
) -> TaskEvent:
    return TaskEvent(
        task_id=str(row["id"]),
        run_id=str(row["workflow_run_id"]),
        retry_count=row["retry_count"] if retry_count is None else retry_count,
        event_type=event_type,
        message=message,
        output=output,
        worker_id=opt(row["worker_id"]),
    )


async def record_task_event(
    repo: Repository,
    conn: Conn,
    *,
    tenant_id: str,
    row: Record,
    event_type: str,
    message: str = "",
    worker_id: str | None = None,
) -> None:
    """Write one event of the task ``row`` (its ``id``, ``workflow_run_id`` and
    ``retry_count``) for a single-task state change."""
    await repo.insert_task_events(
        conn,
        tenant_id=tenant_id,
        events=[
            TaskEvent(
                task_id=str(row["id"]),
                run_id=str(row["workflow_run_id"]),
                retry_count=int(row["retry_count"]),
                event_type=event_type,
                message=message,
                worker_id=worker_id,
            )
        ],
    )


def finished_task_messages(
    row: Record, status: TaskStatus, *, payload: str
) -> list[dict[str, Any]]:
    """A finished attempt frees its worker's slot and is a run event for live subscribers."""
    messages: list[dict[str, Any]] = []
    if row["worker_id"]:
        messages.append({"t": "slots", "worker": str(row["worker_id"])})
    messages.append(run_event(row, status.value, retry_count=row["retry_count"], payload=payload))
    return messages


def run_event(row: Record, kind: str, *, retry_count: int, payload: str) -> dict[str, Any]:
    return {
        "t": "event",
        "run": str(row["workflow_run_id"]),
        "task": str(row["id"]),
        "kind": kind,
        "retry": retry_count,
        "payload": payload if len(payload) <= INLINE_OUTPUT_LIMIT else "",
    }


def cancel_message(row: Record, *, retry_count: int | None = None) -> dict[str, Any]:
    """What the replica holding the worker's stream needs to build a CANCEL action."""
    return {
        "t": "worker",
        "op": "cancel",
        "tenant": str(row["tenant_id"]),
        "worker": str(row["worker_id"]),
        "task": str(row["id"]),
        "run": str(row["workflow_run_id"]),
        "step": str(row["step_id"]),
        "action": row["action_id"],
        "readable": row["readable_id"],
        "retry": row["retry_count"] if retry_count is None else retry_count,
        # the SDK keys a durable task's run by its invocation too; a cancel must match it
        "inv": row["invocation_count"] if row["is_durable"] else None,
    }


def stale_message(task: Record, retry_count: int) -> str:
    return (
        f"task {task['id']} attempt {retry_count} is not running "
        f"(status {task['status']}, current attempt {task['retry_count']})"
    )


def inline_run_result(row: Record, *, output: str) -> dict[str, Any]:
    """A single-task run's result, to add to its local run-finished echo (never to a NOTIFY:
    outputs may be megabytes). ``ResultWatchers`` answers from it without a read."""
    return {
        "tenant": str(row["tenant_id"]),
        "result": [
            {
                "task_id": str(row["id"]),
                "readable_id": row["readable_id"],
                "status": TaskStatus.COMPLETED.value,
                "output": output,
                "error": None,
            }
        ],
    }
