"""Deadlines (``Timers.run_once``): execution timeouts, schedule timeouts, silent workers."""

from __future__ import annotations

from typing import Any

import pytest
from tests.integration.harness import Replica, drain, eventually, next_message

from hewer.engine.services.lifecycle import StaleAttempt
from hewer.engine.services.workers import ActionKind, ActionMessage, WorkerSession

HEARTBEAT_TIMEOUT = 5.0

pytestmark = pytest.mark.engine_options(heartbeat_timeout=HEARTBEAT_TIMEOUT)


def single(**task: Any) -> dict[str, Any]:
    return {"name": "solo", "tasks": [{"readable_id": "run", "action": "solo:run", **task}]}


async def start_one(engine: Replica, tenant: str, worker: WorkerSession) -> ActionMessage:
    assert await engine.scheduler.run_round(tenant)
    (message,) = drain(worker)
    assert message.kind is ActionKind.START
    return message


async def test_execution_timeout_retries_then_fails(engine: Replica, tenant: str) -> None:
    await engine.register(tenant, single(timeout="1s", retries=1))
    worker = await engine.connect_worker(tenant, ["solo:run"])
    run_id = await engine.trigger(tenant, "solo")

    for attempt in (0, 1):
        message = await start_one(engine, tenant, worker)
        assert message.retry_count == attempt
        task = await engine.task_row(run_id)
        assert (task["status"], task["retry_count"]) == ("RUNNING", attempt)
        assert (task["timeout_at"] - task["assigned_at"]).total_seconds() == 1.0

        async def timed_out(attempt: int = attempt) -> bool:
            await engine.timers.run_once()
            task = await engine.task_row(run_id)
            return bool(task["retry_count"] > attempt or task["status"] != "RUNNING")

        await eventually(timed_out, within=5.0, interval=0.1)
        # the worker may still be running the attempt: it is told to stop
        cancel = await next_message(worker)
        assert (cancel.kind, cancel.task_id, cancel.retry_count) == (
            ActionKind.CANCEL,
            run_id,
            attempt,
        )

    task = await engine.task_row(run_id)
    assert (task["status"], task["error"]) == ("FAILED", "Task exceeded timeout of 1s")
    assert (task["retry_count"], task["app_retry_count"]) == (1, 1)
    assert (await engine.run_row(run_id))["status"] == "FAILED"
    assert await engine.events(run_id) == [
        ("QUEUED", 0),
        ("ASSIGNED", 0),
        ("TIMED_OUT", 0),
        ("RETRYING", 1),
        ("ASSIGNED", 1),
        ("TIMED_OUT", 1),
    ]
    # a result arriving after the timeout is too late
    with pytest.raises(StaleAttempt):
        await engine.lifecycle.completed(
            tenant_id=tenant, task_id=run_id, retry_count=1, output="{}"
        )


async def test_refreshed_timeout_is_respected(engine: Replica, tenant: str) -> None:
    await engine.register(tenant, single(timeout="1s"))
    worker = await engine.connect_worker(tenant, ["solo:run"])
    run_id = await engine.trigger(tenant, "solo")
    await start_one(engine, tenant, worker)
    assert await engine.repo.refresh_timeout(tenant_id=tenant, task_id=run_id, seconds=60)
    # let 30 s "pass": past the original 1 s deadline, well within the refreshed one
    await engine.repo.pool.execute(
        "UPDATE tasks SET timeout_at = timeout_at - interval '30 seconds' WHERE id = $1", run_id
    )
    await engine.timers.run_once()
    assert (await engine.task_row(run_id))["status"] == "RUNNING"
    await engine.repo.pool.execute(
        "UPDATE tasks SET timeout_at = timeout_at - interval '60 seconds' WHERE id = $1", run_id
    )
    await engine.timers.run_once()
    assert (await engine.task_row(run_id))["status"] == "FAILED"


async def test_schedule_timeout_cancels_a_task_nobody_picked_up(
    engine: Replica, tenant: str
) -> None:
    await engine.register(tenant, single(schedule_timeout="1s"))
    run_id = await engine.trigger(tenant, "solo")
    allowed = await engine.repo.pool.fetchval(
        "SELECT extract(epoch FROM schedule_timeout_at - available_at) FROM queue_items"
    )
    assert float(allowed) == 1.0

    async def cancelled() -> bool:
        await engine.timers.run_once()
        return bool((await engine.task_row(run_id))["status"] == "CANCELLED")

    await eventually(cancelled, within=5.0, interval=0.1)
    run = await engine.run_row(run_id)
    assert (run["status"], run["finished_at"] is not None) == ("CANCELLED", True)
    assert await engine.repo.pool.fetchval("SELECT count(*) FROM queue_items") == 0
    message = await engine.repo.pool.fetchval(
        "SELECT message FROM task_events WHERE task_id = $1 AND event_type = 'CANCELLED'", run_id
    )
    assert message == "SCHEDULING_TIMED_OUT"
    # a worker arriving later gets nothing
    worker = await engine.connect_worker(tenant, ["solo:run"])
    assert not await engine.scheduler.run_round(tenant)
    assert drain(worker) == []


async def test_tasks_of_a_silent_worker_go_to_another_worker(engine: Replica, tenant: str) -> None:
    await engine.register(tenant, single(retries=0))
    silent = await engine.connect_worker(tenant, ["solo:run"], name="silent")
    run_id = await engine.trigger(tenant, "solo")
    await start_one(engine, tenant, silent)
    healthy = await engine.connect_worker(tenant, ["solo:run"], name="healthy")

    await engine.timers.run_once()  # every heartbeat is fresh: nothing moves
    task = await engine.task_row(run_id)
    assert (task["status"], str(task["worker_id"])) == ("RUNNING", silent.worker_id)

    await engine.repo.pool.execute(
        "UPDATE workers SET last_heartbeat_at = now() - make_interval(secs => $2) WHERE id = $1",
        silent.worker_id,
        HEARTBEAT_TIMEOUT * 3,
    )
    await engine.timers.run_once()

    task = await engine.task_row(run_id)
    # an internal failure: a new attempt, but no application retry used
    assert (task["status"], task["retry_count"], task["app_retry_count"]) == ("QUEUED", 1, 0)
    assert task["worker_id"] is None
    assert (await engine.events(run_id))[-1] == ("REASSIGNED", 0)
    worker_row = await engine.repo.get_worker(tenant_id=tenant, worker_id=silent.worker_id)
    assert worker_row is not None
    assert worker_row["is_active"] is False

    # the silent worker still has free slots and a session, but is not given the task
    assert await engine.scheduler.run_round(tenant)
    assert drain(silent) == []
    (moved,) = drain(healthy)
    assert (moved.task_id, moved.retry_count) == (run_id, 1)
    # the silent worker's late result for its attempt is ignored
    with pytest.raises(StaleAttempt):
        await engine.lifecycle.completed(
            tenant_id=tenant, task_id=run_id, retry_count=0, output="{}"
        )
    await engine.lifecycle.completed(tenant_id=tenant, task_id=run_id, retry_count=1, output="{}")
    assert (await engine.run_row(run_id))["status"] == "COMPLETED"
