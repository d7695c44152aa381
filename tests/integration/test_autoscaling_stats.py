"""What autoscalers read, on PostgreSQL: task-stats, a WorkerPool's aggregate and the
long-poll that wakes the operator on an enqueue (``services/autoscaling.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from tests.integration.harness import Replica, eventually

from hewer.engine.api.rest.app import build_app
from hewer.engine.services import autoscaling as autoscaling_module
from hewer.engine.services.auth import Authenticator
from hewer.engine.services.autoscaling import Autoscaling
from hewer.engine.services.definitions import Definitions
from hewer.engine.services.reads import Reads
from hewer.engine.services.tenant_objects import TenantObjects

Call = Callable[..., Awaitable[tuple[int, Any]]]

SCALED = {"name": "scaled", "tasks": [{"readable_id": "work", "action": "scaled:work"}]}
OTHER = {"name": "other", "tasks": [{"readable_id": "chore", "action": "other:chore"}]}


@contextlib.asynccontextmanager
async def rest_client(engine: Replica, tenant: str) -> AsyncIterator[Call]:
    """The REST app with the autoscaling service, woken by this replica's bus as in
    ``server.run_engine``; ``call(method, path) -> (status, JSON)`` with a token of
    ``tenant``."""
    auth = await Authenticator.create(
        repo=engine.repo, configured_secret=None, server_url="http://x", grpc_address="x:1"
    )
    service = Autoscaling(repo=engine.repo)
    engine.bus.subscribe("queue", service.on_bus)
    engine.bus.subscribe("resync", service.on_bus)
    headers = {"Authorization": f"Bearer {await auth.issue(tenant_id=tenant)}"}
    app = build_app(
        reads=Reads(engine.repo),
        objects=TenantObjects(engine.repo),
        definitions=Definitions(engine.repo),
        control=engine.control,
        auth=auth,
        autoscaling=service,
    )
    async with TestClient(TestServer(app)) as client:

        async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
            resp = await client.request(method, path, json=body, headers=headers)
            return resp.status, await resp.json()

        yield call


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


async def test_the_long_poll_answers_on_the_first_enqueue(
    engine: Replica, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # only the bus's queue signal can wake the poll early: its periodic re-check is off
    monkeypatch.setattr(autoscaling_module, "RECHECK_SECONDS", 120.0)
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


async def test_tasks_held_by_a_concurrency_key_ask_for_no_replicas(
    engine: Replica, tenant: str
) -> None:
    await engine.register(
        tenant,
        {
            "name": "scaled",
            "tasks": [
                {
                    "readable_id": "work",
                    "action": "scaled:work",
                    "concurrency": [
                        {
                            "expression": "input.k",
                            "max_runs": 1,
                            "limit_strategy": "GROUP_ROUND_ROBIN",
                        }
                    ],
                }
            ],
        },
    )
    for k in ["A"] * 5 + ["B"]:
        await engine.trigger(tenant, "scaled", {"k": k})
    await engine.admission.run_pass(tenant)
    async with rest_client(engine, tenant) as call:
        # one runnable task per key: the other four A's could not use another worker
        _, body = await call("GET", pool_path(tenant, "stats"))
        assert body["queued"] == 2
        _, stats = await call("GET", f"/api/v1/tenants/{tenant}/task-stats")
        assert stats["work"]["queued"]["total"] == 2
        # how many tasks each key holds, the queued ones waiting in front of or in the queue
        (group,) = stats["work"]["queued"]["concurrency"]
        assert group == {
            "expression": "input.k",
            "type": "GROUP_ROUND_ROBIN",
            "keys": {"A": 5, "B": 1},
        }
