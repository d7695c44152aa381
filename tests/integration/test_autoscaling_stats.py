"""What autoscalers read, on PostgreSQL: task-stats, a WorkerPool's aggregate and the
long-poll that wakes the operator on an enqueue (``services/autoscaling.py``)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import asyncpg
from tests.integration.harness import Replica, eventually
from tests.integration.test_scheduling import rest_client

SCALED = {"name": "scaled", "tasks": [{"readable_id": "work", "action": "scaled:work"}]}
OTHER = {"name": "other", "tasks": [{"readable_id": "chore", "action": "other:chore"}]}


def pool_path(tenant: str, what: str, **params: Any) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"/api/v1/hewer/tenants/{tenant}/worker-pools/p/{what}?workflow=scaled&{query}"


async def test_runnable_work_only_and_the_pool_workers(
    engine: Replica, tenant: str, pool: asyncpg.Pool
) -> None:
    await engine.register(tenant, SCALED)
    await engine.register(tenant, OTHER)
    runs = [await engine.trigger(tenant, "scaled") for _ in range(4)]
    await engine.trigger(tenant, "other")
    # one item waits for its rate limit's refill, one is set aside (paused workflow)
    await pool.execute(
        "UPDATE queue_items SET available_at = now() + interval '1 hour'"
        " WHERE task_id = (SELECT id FROM tasks WHERE workflow_run_id = $1)",
        runs[0],
    )
    await pool.execute(
        "UPDATE queue_items SET paused = true"
        " WHERE task_id = (SELECT id FROM tasks WHERE workflow_run_id = $1)",
        runs[1],
    )
    async with rest_client(engine, tenant) as call:
        status, stats = await call("GET", f"/api/v1/tenants/{tenant}/task-stats")
        assert status == 200
        assert stats["work"]["queued"]["total"] == 2
        assert stats["work"]["queued"]["queues"] == {"scaled:work": 2}
        assert stats["work"]["queued"]["concurrency"] == []
        assert stats["work"]["queued"]["oldest"].endswith("Z")
        assert stats["chore"]["queued"]["total"] == 1 and "running" not in stats["work"]

        status, body = await call("GET", pool_path(tenant, "stats") + "&workflow=nope")
        assert status == 200
        assert (body["queued"], body["running"], body["workers"]) == (2, 0, [])
        assert body["unknownWorkflows"] == ["nope"]
        assert body["oldestQueuedAgeSeconds"] >= 0

        session = await engine.connect_worker(tenant, ["scaled:work"], name="p-worker")
        await pool.execute(
            "UPDATE workers SET labels = $2::jsonb WHERE id = $1",
            session.worker_id,
            json.dumps({"hewer.dev/worker-pool": "p", "hewer.dev/pod": "p-abc12"}),
        )
        await engine.scheduler.run_round(tenant)

        async def two_running() -> bool:
            _, b = await call("GET", pool_path(tenant, "stats"))
            return bool(b["running"] == 2)

        await eventually(two_running)
        _, body = await call("GET", pool_path(tenant, "stats"))
        assert body["queued"] == 0 and body["busyWorkers"] == 1
        (worker,) = body["workers"]
        assert worker["pod"] == "p-abc12" and worker["busy"] and worker["running"] == 2
        _, stats = await call("GET", f"/api/v1/tenants/{tenant}/task-stats")
        assert stats["work"]["running"]["total"] == 2 and "queued" not in stats["work"]


async def test_the_long_poll_answers_on_the_first_enqueue(engine: Replica, tenant: str) -> None:
    await engine.register(tenant, SCALED)
    async with rest_client(engine, tenant) as call:
        started = time.monotonic()
        status, body = await call("GET", pool_path(tenant, "wait", queued=0, timeoutSeconds=1))
        assert status == 200 and body["queued"] == 0  # nothing queued: answered at the timeout
        assert time.monotonic() - started >= 0.9

        waiting = asyncio.ensure_future(
            call("GET", pool_path(tenant, "wait", queued=0, timeoutSeconds=45))
        )
        await asyncio.sleep(0.5)
        assert not waiting.done()
        started = time.monotonic()
        await engine.trigger(tenant, "scaled")
        status, body = await asyncio.wait_for(waiting, 40)
        assert status == 200 and body["queued"] == 1
        # the bus woke it, not the 45 s timeout (generous: the machine is shared)
        assert time.monotonic() - started < 30

        # already more queued than the caller knows: answered at once
        status, body = await call("GET", pool_path(tenant, "wait", queued=0, timeoutSeconds=45))
        assert (status, body["queued"]) == (200, 1)


async def test_bad_pool_requests_are_4xx(engine: Replica, tenant: str) -> None:
    async with rest_client(engine, tenant) as call:
        base = f"/api/v1/hewer/tenants/{tenant}/worker-pools/p"
        status, body = await call("GET", f"{base}/stats")
        assert status == 400 and "serves nothing" in json.dumps(body)
        status, _ = await call("GET", f"{base}/wait?workflow=a&timeoutSeconds=999")
        assert status == 400
        status, _ = await call("GET", f"{base}/wait?workflow=a&queued=-1")
        assert status == 400
