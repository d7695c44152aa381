"""What must not happen: stale reports applied, tenants crossing, ineligible workers served."""

from __future__ import annotations

from typing import Any

import pytest
from tests.integration.harness import Replica, drain

from hewer.engine.services.lifecycle import StaleAttempt, TaskNotFound
from hewer.engine.services.triggers import TriggerError
from hewer.engine.services.workers import WorkerSession

SOLO: dict[str, Any] = {
    "name": "solo",
    "tasks": [{"readable_id": "run", "action": "solo:run", "retries": 1}],
}
UNKNOWN_TASK = "00000000-0000-0000-0000-000000000001"


async def assigned_solo_run(engine: Replica, tenant: str) -> tuple[str, WorkerSession]:
    """A run of SOLO, assigned to a new worker whose start message is taken."""
    await engine.register(tenant, SOLO)
    worker = await engine.connect_worker(tenant, ["solo:run"])
    run_id = await engine.trigger(tenant, "solo")
    await engine.scheduler.run_round(tenant)
    drain(worker)
    return run_id, worker


# -- stale attempts ------------------------------------------------------------------------------


async def test_reports_for_an_old_attempt_change_nothing(engine: Replica, tenant: str) -> None:
    run_id, worker = await assigned_solo_run(engine, tenant)
    await engine.lifecycle.failed(tenant_id=tenant, task_id=run_id, retry_count=0, error="e")
    before = await engine.task_row(run_id)
    events_before = await engine.events(run_id)
    assert (before["status"], before["retry_count"]) == ("QUEUED", 1)

    with pytest.raises(StaleAttempt):
        await engine.lifecycle.completed(
            tenant_id=tenant, task_id=run_id, retry_count=0, output='{"late": true}'
        )
    with pytest.raises(StaleAttempt):
        await engine.lifecycle.failed(tenant_id=tenant, task_id=run_id, retry_count=0, error="x")
    assert not await engine.lifecycle.requeue_lost(
        tenant_id=tenant, task_id=run_id, retry_count=0, reason="gone"
    )
    assert await engine.task_row(run_id) == before
    assert await engine.events(run_id) == events_before
    assert (await engine.run_row(run_id))["status"] == "RUNNING"
    assert await engine.repo.pool.fetchval("SELECT count(*) FROM queue_items") == 1

    # the current attempt still completes normally, and only once
    await engine.scheduler.run_round(tenant)
    (retry,) = drain(worker)
    assert retry.retry_count == 1
    await engine.lifecycle.completed(tenant_id=tenant, task_id=run_id, retry_count=1, output="{}")
    with pytest.raises(StaleAttempt):
        await engine.lifecycle.completed(
            tenant_id=tenant, task_id=run_id, retry_count=1, output='{"again": true}'
        )
    with pytest.raises(StaleAttempt):
        await engine.lifecycle.completed(
            tenant_id=tenant, task_id=run_id, retry_count=7, output="{}"
        )
    task = await engine.task_row(run_id)
    assert (task["status"], task["output"]) == ("COMPLETED", "{}")
    assert [e for e in await engine.events(run_id) if e[0] == "COMPLETED"] == [("COMPLETED", 1)]


async def test_reports_for_unknown_tasks_are_refused(engine: Replica, tenant: str) -> None:
    with pytest.raises(TaskNotFound):
        await engine.lifecycle.completed(
            tenant_id=tenant, task_id=UNKNOWN_TASK, retry_count=0, output="{}"
        )
    with pytest.raises(TaskNotFound):
        await engine.lifecycle.failed(
            tenant_id=tenant, task_id=UNKNOWN_TASK, retry_count=0, error="e"
        )
    with pytest.raises(TaskNotFound):
        await engine.lifecycle.started(tenant_id=tenant, task_id=UNKNOWN_TASK, retry_count=0)


async def test_started_is_recorded_once_for_the_running_attempt(
    engine: Replica, tenant: str
) -> None:
    run_id, _ = await assigned_solo_run(engine, tenant)
    await engine.lifecycle.started(tenant_id=tenant, task_id=run_id, retry_count=0)
    await engine.lifecycle.started(tenant_id=tenant, task_id=run_id, retry_count=0)
    await engine.lifecycle.started(tenant_id=tenant, task_id=run_id, retry_count=3)
    assert [e for e in await engine.events(run_id) if e[0] == "STARTED"] == [("STARTED", 0)]
    assert (await engine.task_row(run_id))["started_at"] is not None


async def test_a_repeated_start_report_is_answered_without_the_database(
    engine: Replica, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id, _ = await assigned_solo_run(engine, tenant)
    await engine.lifecycle.started(tenant_id=tenant, task_id=run_id, retry_count=0)
    writes: list[list[str]] = []
    start_tasks = engine.repo.start_tasks

    async def counted(**kwargs: Any) -> Any:
        writes.append(list(kwargs["task_ids"]))
        return await start_tasks(**kwargs)

    monkeypatch.setattr(engine.repo, "start_tasks", counted)
    await engine.lifecycle.started(tenant_id=tenant, task_id=run_id, retry_count=0)
    assert writes == []
    # another attempt, and an unknown task (a failure is not remembered), do reach it
    await engine.lifecycle.started(tenant_id=tenant, task_id=run_id, retry_count=1)
    for _ in range(2):
        with pytest.raises(TaskNotFound):
            await engine.lifecycle.started(tenant_id=tenant, task_id=UNKNOWN_TASK, retry_count=0)
    assert writes == [[run_id], [UNKNOWN_TASK], [UNKNOWN_TASK]]


async def test_a_completion_that_overtakes_its_start_report_still_records_a_start(
    engine: Replica, tenant: str
) -> None:
    # the SDK sends STARTED and COMPLETED as concurrent calls: a quick task's completion may
    # be written first, and the late start report then finds the attempt no longer running
    run_id, _ = await assigned_solo_run(engine, tenant)
    await engine.lifecycle.completed(tenant_id=tenant, task_id=run_id, retry_count=0, output="{}")
    await engine.lifecycle.started(tenant_id=tenant, task_id=run_id, retry_count=0)
    row = await engine.task_row(run_id)
    assert row["status"] == "COMPLETED"
    assert row["started_at"] is not None and row["started_at"] <= row["finished_at"]


# -- tenant isolation --------------------------------------------------------------------------


async def test_one_tenant_cannot_touch_another_tenants_tasks(engine: Replica, tenant: str) -> None:
    other = await engine.repo.ensure_tenant("tenant-b")
    running, worker = await assigned_solo_run(engine, tenant)
    queued = await engine.trigger(tenant, "solo")  # a second run, not yet assigned
    await engine.control.set_worker_paused(
        tenant_id=tenant, worker_id=worker.worker_id, paused=True
    )
    snapshot = await engine.repo.pool.fetch("SELECT * FROM tasks ORDER BY id")

    with pytest.raises(TaskNotFound):
        await engine.lifecycle.completed(
            tenant_id=other, task_id=running, retry_count=0, output='{"stolen": true}'
        )
    with pytest.raises(TaskNotFound):
        await engine.lifecycle.failed(tenant_id=other, task_id=running, retry_count=0, error="x")
    with pytest.raises(TaskNotFound):
        await engine.lifecycle.started(tenant_id=other, task_id=running, retry_count=0)
    assert not await engine.lifecycle.requeue_lost(
        tenant_id=other, task_id=running, retry_count=0, reason="x"
    )
    assert (
        await engine.lifecycle.cancel(tenant_id=other, task_ids=[running, queued], reason="x") == []
    )
    assert await engine.control.cancel(tenant_id=other, external_ids=[running, queued]) == []
    assert not await engine.control.set_worker_paused(
        tenant_id=other, worker_id=worker.worker_id, paused=False
    )
    with pytest.raises(TriggerError, match="not found"):
        await engine.trigger(other, "solo")

    # the other tenant's own workflow of the same name cannot spawn under a foreign task,
    # and its own worker for it gets none of the first tenant's work
    await engine.register(other, SOLO)
    with pytest.raises(TriggerError, match="parent task"):
        await engine.trigger(other, "solo", parent_task_id=running)
    intruder = await engine.connect_worker(other, ["solo:run"])
    assert not await engine.scheduler.run_round(other)
    assert drain(intruder) == []

    assert await engine.repo.pool.fetch("SELECT * FROM tasks ORDER BY id") == snapshot
    assert (
        await engine.repo.pool.fetchval(
            "SELECT count(*) FROM task_events WHERE tenant_id = $1", other
        )
        == 0
    )

    # a finished run cannot be replayed by the other tenant either
    await engine.lifecycle.completed(tenant_id=tenant, task_id=running, retry_count=0, output="{}")
    assert await engine.control.replay(tenant_id=other, external_ids=[running]) == []
    assert (await engine.task_row(running))["status"] == "COMPLETED"


# -- which workers the scheduler serves ------------------------------------------------------


async def test_paused_workers_get_nothing_until_resumed(engine: Replica, tenant: str) -> None:
    await engine.register(tenant, SOLO)
    worker = await engine.connect_worker(tenant, ["solo:run"])
    await engine.trigger(tenant, "solo")
    assert await engine.control.set_worker_paused(
        tenant_id=tenant, worker_id=worker.worker_id, paused=True
    )
    assert not await engine.scheduler.run_round(tenant)
    assert drain(worker) == []
    await engine.control.set_worker_paused(
        tenant_id=tenant, worker_id=worker.worker_id, paused=False
    )
    assert await engine.scheduler.run_round(tenant)
    assert len(drain(worker)) == 1


async def test_a_worker_listening_on_another_replica_is_not_served(
    engine: Replica, tenant: str
) -> None:
    await engine.register(tenant, SOLO)
    worker = await engine.connect_worker(tenant, ["solo:run"])
    # the worker reconnected to another replica; this one still has the stale session
    await engine.repo.worker_listening(
        tenant_id=tenant, worker_id=worker.worker_id, engine_id="engine-elsewhere"
    )
    run_id = await engine.trigger(tenant, "solo")
    assert not await engine.scheduler.run_round(tenant)
    assert drain(worker) == []
    assert (await engine.task_row(run_id))["status"] == "QUEUED"


async def test_a_worker_with_a_stale_heartbeat_is_not_served(engine: Replica, tenant: str) -> None:
    await engine.register(tenant, SOLO)
    worker = await engine.connect_worker(tenant, ["solo:run"])
    await engine.repo.pool.execute(
        "UPDATE workers SET last_heartbeat_at = now() - interval '1 minute' WHERE id = $1",
        worker.worker_id,
    )
    await engine.trigger(tenant, "solo")
    assert not await engine.scheduler.run_round(tenant)
    await engine.repo.worker_heartbeat(tenant_id=tenant, worker_id=worker.worker_id)
    assert await engine.scheduler.run_round(tenant)
    assert len(drain(worker)) == 1


async def test_a_detached_session_is_not_served(engine: Replica, tenant: str) -> None:
    await engine.register(tenant, SOLO)
    worker = await engine.connect_worker(tenant, ["solo:run"])
    engine.hub.detach(worker)
    run_id = await engine.trigger(tenant, "solo")
    assert not await engine.scheduler.run_round(tenant)
    assert drain(worker) == []
    assert (await engine.task_row(run_id))["status"] == "QUEUED"


async def test_assignments_that_cannot_be_sent_are_requeued(
    engine: Replica, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await engine.register(tenant, SOLO)
    worker = await engine.connect_worker(tenant, ["solo:run"])
    run_id = await engine.trigger(tenant, "solo")
    # the stream closes while the round is in flight: the hub refuses the message
    monkeypatch.setattr(engine.hub, "send", lambda worker_id, message: False)
    assert await engine.scheduler.run_round(tenant)
    assert drain(worker) == []
    task = await engine.task_row(run_id)
    assert (task["status"], task["retry_count"], task["app_retry_count"]) == ("QUEUED", 1, 0)
    assert await engine.repo.pool.fetchval("SELECT count(*) FROM queue_items") == 1
