"""Fair recovery: an attempt re-queued because its worker died, or because its dispatch could
not be delivered, keeps its queue position and starts before runs queued after it."""

from __future__ import annotations

import pytest
from tests.integration.harness import Replica, drain

from hewer.engine.services.workers import ActionKind

HEARTBEAT_TIMEOUT = 5.0
SOLO = {"name": "solo", "tasks": [{"readable_id": "run", "action": "solo:run", "retries": 0}]}

pytestmark = pytest.mark.engine_options(heartbeat_timeout=HEARTBEAT_TIMEOUT)


async def _started_order(engine: Replica, tenant: str, worker_slots: int) -> list[str]:
    """Connect a fresh worker with ``worker_slots`` slots and return the task ids it is
    given, in order."""
    worker = await engine.connect_worker(
        tenant, ["solo:run"], slots={"default": worker_slots}, name="fresh"
    )
    assert await engine.scheduler.run_round(tenant)
    messages = drain(worker)
    assert all(m.kind is ActionKind.START for m in messages)
    return [m.task_id for m in messages]


async def test_task_of_a_dead_worker_starts_before_later_runs(engine: Replica, tenant: str) -> None:
    await engine.register(tenant, SOLO)
    dying = await engine.connect_worker(tenant, ["solo:run"], slots={"default": 1}, name="dying")
    first = await engine.trigger(tenant, "solo")
    assert await engine.scheduler.run_round(tenant)
    (message,) = drain(dying)
    assert message.task_id == first
    later = [await engine.trigger(tenant, "solo") for _ in range(5)]  # queued behind it

    await engine.repo.pool.execute(
        "UPDATE workers SET last_heartbeat_at = now() - make_interval(secs => $2) WHERE id = $1",
        dying.worker_id,
        HEARTBEAT_TIMEOUT * 3,
    )
    engine.hub.detach(dying)
    await engine.timers.run_once()
    task = await engine.task_row(first)
    assert (task["status"], task["retry_count"]) == ("QUEUED", 1)

    # one slot: the recovered task goes first, then the others in their own order
    assert await _started_order(engine, tenant, worker_slots=1) == [first]
    assert (await engine.events(first))[-2:] == [("REASSIGNED", 0), ("ASSIGNED", 1)]
    for run_id in later:
        assert (await engine.task_row(run_id))["status"] == "QUEUED"


async def test_undeliverable_dispatch_keeps_its_place(engine: Replica, tenant: str) -> None:
    await engine.register(tenant, SOLO)
    gone = await engine.connect_worker(tenant, ["solo:run"], slots={"default": 1}, name="gone")
    first = await engine.trigger(tenant, "solo")
    assert await engine.scheduler.run_round(tenant)
    (message,) = drain(gone)
    later = [await engine.trigger(tenant, "solo") for _ in range(3)]
    # the stream closed before the task was sent: the dispatcher puts it back
    engine.hub.detach(gone)
    await engine.repo.pool.execute(
        "UPDATE workers SET is_active = false WHERE id = $1", gone.worker_id
    )
    assert await engine.lifecycle.requeue_lost(
        tenant_id=tenant,
        task_id=message.task_id,
        retry_count=message.retry_count,
        reason="worker stream closed before the task was sent",
    )
    assert await _started_order(engine, tenant, worker_slots=1) == [first]
    for run_id in later:
        assert (await engine.task_row(run_id))["status"] == "QUEUED"


async def test_retry_after_failure_queues_behind(engine: Replica, tenant: str) -> None:
    """A retry after a failure is a new attempt and queues normally (README)."""
    await engine.register(
        tenant,
        {"name": "solo", "tasks": [{"readable_id": "run", "action": "solo:run", "retries": 1}]},
    )
    worker = await engine.connect_worker(tenant, ["solo:run"], slots={"default": 1}, name="w")
    first = await engine.trigger(tenant, "solo")
    assert await engine.scheduler.run_round(tenant)
    (message,) = drain(worker)
    later = await engine.trigger(tenant, "solo")
    await engine.lifecycle.failed(
        tenant_id=tenant, task_id=first, retry_count=message.retry_count, error="boom"
    )
    assert await engine.scheduler.run_round(tenant)
    (next_start,) = drain(worker)
    assert next_start.task_id == later
