"""Crons, scheduled runs, workflow pause, retention and Prometheus metrics, on PostgreSQL.

The cron test runs two complete replicas' tickers against one database: a cron firing every
second must create one run per second, never two for one tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from tests.integration.harness import Replica

from hewer.engine.api.rest.app import build_app
from hewer.engine.api.rest.observability import refresh_gauges
from hewer.engine.db.base import QueueEntry
from hewer.engine.services.auth import Authenticator
from hewer.engine.services.definitions import Definitions
from hewer.engine.services.events import Events, NewEvent
from hewer.engine.services.metrics import METRICS
from hewer.engine.services.reads import Reads
from hewer.engine.services.retention import Retention
from hewer.engine.services.scheduling import (
    NotFoundError,
    Scheduling,
    SchedulingError,
)
from hewer.engine.services.tenant_objects import TenantObjects
from hewer.engine.services.triggers import TriggerError

WORKFLOW = {"name": "ticked", "tasks": [{"readable_id": "run", "action": "ticked:run"}]}


def scheduling_of(replica: Replica) -> Scheduling:
    return Scheduling(
        repo=replica.repo,
        bus=replica.bus,
        triggers=replica.triggers,
        lifecycle=replica.lifecycle,
    )


async def runs_of(pool: asyncpg.Pool, workflow: str) -> list[asyncpg.Record]:
    return list(
        await pool.fetch(
            "SELECT r.id, r.created_at, r.input, r.additional_metadata, r.priority"
            " FROM workflow_runs r JOIN workflows w ON w.id = r.workflow_id"
            " WHERE w.name = $1 ORDER BY r.created_at",
            workflow,
        )
    )


@pytest.mark.slow
async def test_a_cron_every_second_fires_once_per_tick_across_two_replicas(
    dsn: str, pool: asyncpg.Pool
) -> None:
    replicas = [await Replica.start(dsn), await Replica.start(dsn)]
    tickers = [scheduling_of(r) for r in replicas]
    try:
        tenant = await replicas[0].repo.ensure_tenant("t")
        await replicas[0].register(tenant, WORKFLOW)
        await tickers[0].create_cron(
            tenant_id=tenant,
            workflow_name="ticked",
            name="every-second",
            expression="* * * * * *",
            input={"n": 1},
            metadata={"k": "v"},
            priority=2,
        )
        for t in tickers:
            t.start()
        await asyncio.sleep(10.0)
        for t in tickers:
            await t.stop()
    finally:
        for r in replicas:
            await r.close()
    runs = await runs_of(pool, "ticked")
    assert 9 <= len(runs) <= 11, len(runs)
    per_second = Counter(r["created_at"].replace(microsecond=0) for r in runs)
    assert max(per_second.values()) == 1, per_second
    first = runs[0]
    value = first["input"]
    assert (json.loads(value) if isinstance(value, str) else value) == {"n": 1}
    assert first["priority"] == 2


async def test_code_crons_are_replaced_on_registration_and_api_crons_kept(
    engine: Replica, tenant: str
) -> None:
    ticker = scheduling_of(engine)
    await engine.register(tenant, {**WORKFLOW, "cron_triggers": ["0 * * * *", "@daily"]})
    await ticker.create_cron(
        tenant_id=tenant,
        workflow_name="ticked",
        name="mine",
        expression="*/5 * * * *",
        input={},
        metadata={},
        priority=None,
    )
    await engine.register(
        tenant, {**WORKFLOW, "cron_triggers": ["@daily", "30 2 * * *"], "cron_input": '{"a": 1}'}
    )
    rows = await engine.repo.pool.fetch("SELECT expression, origin, input FROM crons")
    assert sorted((r["expression"], r["origin"]) for r in rows) == [
        ("*/5 * * * *", "api"),
        ("30 2 * * *", "code"),
        ("@daily", "code"),
    ]
    assert all(r["input"] == {"a": 1} for r in rows if r["origin"] == "code")


async def test_bad_cron_input_is_refused_and_nothing_is_stored(
    engine: Replica, tenant: str
) -> None:
    ticker = scheduling_of(engine)
    await engine.register(tenant, WORKFLOW)
    for expression in ("61 * * * *", "* * *", "@sometimes", ""):
        with pytest.raises(SchedulingError):
            await ticker.create_cron(
                tenant_id=tenant,
                workflow_name="ticked",
                name="bad",
                expression=expression,
                input={},
                metadata={},
                priority=None,
            )
    with pytest.raises(SchedulingError):
        await ticker.create_cron(
            tenant_id=tenant,
            workflow_name="ticked",
            name="bad",
            expression="* * * * *",
            input={},
            metadata={},
            priority=7,
        )
    with pytest.raises(NotFoundError):
        await ticker.create_cron(
            tenant_id=tenant,
            workflow_name="nope",
            name="x",
            expression="* * * * *",
            input={},
            metadata={},
            priority=None,
        )
    assert await engine.repo.pool.fetchval("SELECT count(*) FROM crons") == 0


async def test_a_schedule_fires_once_at_its_time(
    dsn: str, engine: Replica, tenant: str, pool: asyncpg.Pool
) -> None:
    other = await Replica.start(dsn)
    tickers = [scheduling_of(engine), scheduling_of(other)]
    try:
        await engine.register(tenant, WORKFLOW)
        at = datetime.now(UTC) + timedelta(seconds=1.5)
        created = await tickers[0].schedule(
            tenant_id=tenant,
            workflow_name="ticked",
            trigger_at=[at],
            input={"x": 1},
            metadata={"m": "1"},
            priority=None,
        )
        with pytest.raises(SchedulingError):  # in the past
            await tickers[0].schedule(
                tenant_id=tenant,
                workflow_name="ticked",
                trigger_at=[datetime.now(UTC) - timedelta(hours=1)],
                input={},
                metadata={},
                priority=None,
            )
        for t in tickers:
            t.start()
        await asyncio.sleep(0.8)
        assert await runs_of(pool, "ticked") == []
        await asyncio.sleep(2.5)
        for t in tickers:
            await t.stop()
    finally:
        await other.close()
    runs = await runs_of(pool, "ticked")
    assert len(runs) == 1
    assert runs[0]["created_at"] >= at
    row = await pool.fetchrow(
        "SELECT status, workflow_run_id FROM scheduled_runs WHERE id = $1", created.ids[0]
    )
    assert row["status"] == "QUEUED" and row["workflow_run_id"] == runs[0]["id"]


async def test_paused_workflow_keeps_runs_queued_then_cancels_after_ttl(
    engine: Replica, tenant: str, pool: asyncpg.Pool
) -> None:
    ticker = scheduling_of(engine)
    await engine.register(tenant, WORKFLOW)
    workflow_id = str(await pool.fetchval("SELECT id FROM workflows WHERE name = 'ticked'"))
    session = await engine.connect_worker(tenant, ["ticked:run"])
    engine.scheduler.start()
    await ticker.pause(
        tenant_id=tenant,
        workflow_id=workflow_id,
        queue_ttl_seconds=600,
        cron_behavior="QUEUE",
        scheduled_behavior="QUEUE",
    )
    kept = await engine.trigger(tenant, "ticked")
    await asyncio.sleep(1.5)
    assert (await engine.run_row(kept))["status"] == "QUEUED"
    assert session is not None
    await ticker.unpause(tenant_id=tenant, workflow_id=workflow_id)
    for _ in range(50):
        if (await engine.run_row(kept))["status"] == "RUNNING":
            break
        await asyncio.sleep(0.1)
    assert (await engine.run_row(kept))["status"] == "RUNNING"

    await ticker.pause(
        tenant_id=tenant,
        workflow_id=workflow_id,
        queue_ttl_seconds=0.5,
        cron_behavior="DROP",
        scheduled_behavior="DROP",
    )
    dropped = await engine.trigger(tenant, "ticked")
    ticker.start()
    for _ in range(50):
        if (await engine.run_row(dropped))["status"] == "CANCELLED":
            break
        await asyncio.sleep(0.1)
    await ticker.stop()
    assert (await engine.run_row(dropped))["status"] == "CANCELLED"


async def test_retention_deletes_old_final_runs_and_events_only(
    engine: Replica, tenant: str, pool: asyncpg.Pool
) -> None:
    await engine.register(tenant, WORKFLOW)
    old = await engine.trigger(tenant, "ticked")
    recent = await engine.trigger(tenant, "ticked")
    running = await engine.trigger(tenant, "ticked")
    await pool.execute(
        "UPDATE workflow_runs SET status = 'COMPLETED', finished_at = now() - interval '800 hours'"
        " WHERE id = $1",
        old,
    )
    await pool.execute(
        "UPDATE workflow_runs SET status = 'COMPLETED', finished_at = now() WHERE id = $1", recent
    )
    await pool.execute(
        "INSERT INTO events (id, tenant_id, key, created_at) VALUES"
        " (gen_random_uuid(), $1, 'old', now() - interval '800 hours'),"
        " (gen_random_uuid(), $1, 'new', now())",
        tenant,
    )
    deleted = await Retention(repo=engine.repo, default_hours=720, interval_seconds=3600).run_once()
    assert deleted["runs"] == 1 and deleted["events"] == 1
    left = {str(r["id"]) for r in await pool.fetch("SELECT id FROM workflow_runs")}
    assert left == {recent, running}
    assert [r["key"] for r in await pool.fetch("SELECT key FROM events")] == ["new"]


async def test_metrics_parse_and_the_queue_gauge_follows_the_load(
    engine: Replica, tenant: str
) -> None:
    await engine.register(tenant, WORKFLOW)

    async def depth() -> float:
        await refresh_gauges(Reads(engine.repo))
        text = METRICS.render().decode()
        found = 0.0
        names = set()
        for family in text_string_to_metric_families(text):
            names.add(family.name)
            for sample in family.samples:
                if sample.name == "hewer_queue_depth" and sample.labels["tenant_id"] == tenant:
                    found += sample.value
        assert {"hatchet_created_tasks", "hatchet_queued_to_assigned_seconds"} <= names
        return found

    assert await depth() == 0
    for _ in range(5):
        await engine.trigger(tenant, "ticked")
    assert await depth() == 5
    session = await engine.connect_worker(tenant, ["ticked:run"])
    assert session is not None
    assert await engine.scheduler.run_round(tenant)
    assert await depth() == 0


def _duration_samples(tenant: str, workflow: str) -> dict[str, float]:
    """``status -> observation count`` of the workflow-duration histogram."""
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(METRICS.render().decode()):
        for sample in family.samples:
            if (
                sample.name == "hatchet_tenant_workflow_duration_milliseconds_count"
                and sample.labels["tenant_id"] == tenant
                and sample.labels["workflow_name"] == workflow
            ):
                counts[sample.labels["status"]] = sample.value
    return counts


async def test_finished_runs_feed_the_workflow_duration_histogram(
    engine: Replica, tenant: str
) -> None:
    await engine.register(tenant, WORKFLOW)
    before = _duration_samples(tenant, "ticked")
    runs = [await engine.trigger(tenant, "ticked") for _ in range(3)]
    session = await engine.connect_worker(tenant, ["ticked:run"])
    assert session is not None
    assert await engine.scheduler.run_round(tenant)
    # two complete through the single-task fast path, one fails for good through the DAG path
    for run_id in runs[:2]:
        await engine.lifecycle.completed(
            tenant_id=tenant, task_id=run_id, retry_count=0, output="{}"
        )
    await engine.lifecycle.failed(
        tenant_id=tenant, task_id=runs[2], retry_count=0, error="boom", non_retryable=True
    )
    after = _duration_samples(tenant, "ticked")
    assert after.get("COMPLETED", 0) - before.get("COMPLETED", 0) == 2
    assert after.get("FAILED", 0) - before.get("FAILED", 0) == 1


async def test_a_retry_queued_while_a_pause_commits_is_set_aside(
    engine: Replica, tenant: str, pool: asyncpg.Pool
) -> None:
    ticker = scheduling_of(engine)
    await engine.register(tenant, WORKFLOW)
    workflow_id = str(await pool.fetchval("SELECT id FROM workflows WHERE name = 'ticked'"))
    run_id = await engine.trigger(tenant, "ticked")
    await pool.execute("DELETE FROM queue_items WHERE task_id = $1", run_id)
    retry = QueueEntry(
        task_id=run_id,
        retry_count=1,
        action_id="ticked:run",
        priority=1,
        slot_requests={"default": 1},
        desired_worker_id=None,
        delay_seconds=0.0,
        schedule_timeout_seconds=300,
    )
    # the retry's transaction is open (not committed) when the pause runs
    async with engine.repo.transaction() as conn:
        await engine.repo.insert_queue_items(conn, tenant_id=tenant, entries=[retry])
        pausing = asyncio.create_task(
            ticker.pause(
                tenant_id=tenant,
                workflow_id=workflow_id,
                queue_ttl_seconds=600,
                cron_behavior="QUEUE",
                scheduled_behavior="QUEUE",
            )
        )
        await asyncio.sleep(0.3)
    await pausing
    paused = await pool.fetchval("SELECT paused FROM queue_items WHERE task_id = $1", run_id)
    assert paused is True


Call = Callable[..., Awaitable[tuple[int, Any]]]


@contextlib.asynccontextmanager
async def rest_client(engine: Replica, tenant: str) -> AsyncIterator[Call]:
    """``call(method, path, body=None) -> (status, JSON body)`` against the engine's REST app
    with a token of ``tenant``."""
    auth = await Authenticator.create(
        repo=engine.repo, configured_secret=None, server_url="http://x", grpc_address="x:1"
    )
    headers = {"Authorization": f"Bearer {await auth.issue(tenant_id=tenant)}"}
    app = build_app(
        reads=Reads(engine.repo),
        objects=TenantObjects(engine.repo),
        definitions=Definitions(engine.repo),
        control=engine.control,
        auth=auth,
        scheduling_service=scheduling_of(engine),
    )
    async with TestClient(TestServer(app)) as client:

        async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
            resp = await client.request(method, path, json=body, headers=headers)
            return resp.status, await resp.json() if resp.status != 204 else None

        yield call


async def test_scheduling_rest_refusals_are_4xx_and_store_nothing(
    engine: Replica, tenant: str, pool: asyncpg.Pool
) -> None:
    await engine.register(tenant, WORKFLOW)
    base = f"/api/v1/tenants/{tenant}/workflows"
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    workflow_id = str(await pool.fetchval("SELECT id FROM workflows WHERE name = 'ticked'"))
    async with rest_client(engine, tenant) as call:
        cron = {
            "cronName": "c",
            "cronExpression": "61 * * * *",
            "input": {},
            "additionalMetadata": {},
        }
        status, body = await call("POST", f"{base}/ticked/crons", cron)
        assert status == 400 and "61" in body["errors"][0]["description"], body
        status, _ = await call(
            "POST", f"{base}/missing/crons", {**cron, "cronExpression": "* * * * *"}
        )
        assert status == 404
        status, body = await call(
            "POST",
            f"{base}/ticked/scheduled",
            {"triggerAt": past, "input": {}, "additionalMetadata": {}},
        )
        assert status == 400 and "in the past" in body["errors"][0]["description"], body
        unknown = str(uuid.uuid4())
        assert (await call("DELETE", f"{base}/crons/{unknown}"))[0] == 404
        assert (await call("POST", f"{base}/crons/{unknown}"))[0] == 404
        assert (await call("PATCH", f"{base}/scheduled/{unknown}", {"triggerAt": future}))[0] == 404
        pause = {"pause": {"action": "pause", "pausedWorkflowCronRunQueueBehavior": "MAYBE"}}
        assert (await call("PATCH", f"/api/v1/workflows/{workflow_id}", pause))[0] == 400
        # and what is valid is stored
        scheduled = {"triggerAt": future, "input": {}, "additionalMetadata": {}}
        status, body = await call("POST", f"{base}/ticked/scheduled", scheduled)
        assert status == 200, body
    assert await pool.fetchval("SELECT count(*) FROM crons") == 0
    assert await pool.fetchval("SELECT count(*) FROM scheduled_runs") == 1
    assert (
        await pool.fetchval("SELECT is_paused FROM workflows WHERE id = $1", workflow_id) is False
    )


async def test_deleting_a_workflow_keeps_its_runs_and_frees_its_name(
    engine: Replica, tenant: str, pool: asyncpg.Pool
) -> None:
    await engine.register(tenant, {**WORKFLOW, "event_triggers": ["ticked:go"]})
    workflow_id = str(await pool.fetchval("SELECT id FROM workflows WHERE name = 'ticked'"))
    kept = await engine.trigger(tenant, "ticked")
    ticker = scheduling_of(engine)
    await ticker.create_cron(
        tenant_id=tenant,
        workflow_name="ticked",
        name="c",
        expression="* * * * *",
        input={},
        metadata={},
        priority=None,
    )
    await ticker.schedule(
        tenant_id=tenant,
        workflow_name="ticked",
        trigger_at=[datetime.now(UTC) + timedelta(hours=1)],
        input={},
        metadata={},
        priority=None,
    )
    async with rest_client(engine, tenant) as call:
        assert (await call("DELETE", f"/api/v1/workflows/{workflow_id}"))[0] == 204
        assert (await call("DELETE", f"/api/v1/workflows/{workflow_id}"))[0] == 404
        assert (await call("GET", f"/api/v1/workflows/{workflow_id}"))[0] == 404
        status, listing = await call("GET", f"/api/v1/tenants/{tenant}/workflows")
        assert status == 200 and listing["rows"] == []
        # the run is still there, readable
        status, details = await call("GET", f"/api/v1/stable/workflow-runs/{kept}")
        assert status == 200, details
    assert await pool.fetchval("SELECT count(*) FROM crons") == 0
    assert await pool.fetchval("SELECT count(*) FROM scheduled_runs") == 0
    with pytest.raises(TriggerError, match="not found"):
        await engine.trigger(tenant, "ticked")
    events = Events(repo=engine.repo, triggers=engine.triggers)
    (pushed,) = await events.push(
        tenant_id=tenant,
        events=[NewEvent(key="ticked:go", payload={}, additional_metadata={}, scope=None)],
    )
    assert list(pushed.run_ids) == []
    # the name is free again: a new workflow
    await engine.register(tenant, WORKFLOW)
    again = str(await pool.fetchval("SELECT id FROM workflows WHERE name = 'ticked'"))
    assert again != workflow_id
    await engine.trigger(tenant, "ticked")
    # retention removes the deleted workflow once its last run has expired
    await pool.execute(
        "UPDATE workflow_runs SET status = 'CANCELLED', finished_at = now() - interval '800 hours'"
        " WHERE id = $1",
        kept,
    )
    await pool.execute(
        "UPDATE workflows SET deleted_at = now() - interval '800 hours' WHERE id = $1", workflow_id
    )
    deleted = await Retention(repo=engine.repo, default_hours=720, interval_seconds=3600).run_once()
    assert deleted["runs"] == 1 and deleted["workflows"] == 1
    assert await pool.fetchval("SELECT count(*) FROM workflows WHERE id = $1", workflow_id) == 0


def _tenant_counter(tenant: str, name: str) -> float:
    for family in text_string_to_metric_families(METRICS.render().decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("tenant_id") == tenant:
                return sample.value
    return 0.0


async def test_created_and_succeeded_counters_count_the_set_based_writes(
    engine: Replica, tenant: str
) -> None:
    """Triggers and completions write their task events inside one statement each
    (create_runs, complete_tasks); the counters must still see every task."""
    await engine.register(tenant, WORKFLOW)
    created = "hatchet_tenant_created_tasks_total"
    succeeded = "hatchet_tenant_succeeded_tasks_total"
    before = (_tenant_counter(tenant, created), _tenant_counter(tenant, succeeded))
    runs = [await engine.trigger(tenant, "ticked") for _ in range(3)]
    session = await engine.connect_worker(tenant, ["ticked:run"])
    assert session is not None
    assert await engine.scheduler.run_round(tenant)
    for run_id in runs[:2]:
        await engine.lifecycle.completed(
            tenant_id=tenant, task_id=run_id, retry_count=0, output="{}"
        )
    assert _tenant_counter(tenant, created) - before[0] == 3
    assert _tenant_counter(tenant, succeeded) - before[1] == 2
