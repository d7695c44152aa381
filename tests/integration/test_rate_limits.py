"""Rate limits enforced in the claim transaction: fixed windows, deferral with a task event,
dynamic buckets from the run's input, and one bucket shared by two replicas."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from tests.integration.harness import Replica, drain

from hewer.engine.core.definition import InvalidDefinition
from hewer.engine.services.triggers import TriggerError, TriggerRequest


def limited(limit: dict[str, Any], *, name: str = "limited") -> dict[str, Any]:
    return {
        "name": name,
        "tasks": [{"readable_id": "call", "action": f"{name}:call", "rate_limits": [limit]}],
    }


async def trigger(engine: Replica, tenant: str, inputs: list[dict[str, Any]]) -> list[str]:
    return await engine.triggers.trigger(
        tenant_id=tenant,
        requests=[TriggerRequest(workflow_name="limited", input=i) for i in inputs],
    )


async def test_a_static_limit_admits_its_units_per_window_and_says_why_others_wait(
    engine: Replica, tenant: str
) -> None:
    await engine.repo.upsert_rate_limit(tenant_id=tenant, key="api", limit=3, duration="SECOND")
    await engine.register(tenant, limited({"key": "api", "units": 1, "limit_values_expr": "-1"}))
    worker = await engine.connect_worker(tenant, ["limited:call"])
    runs = await trigger(engine, tenant, [{}] * 7)

    assert await engine.scheduler.run_round(tenant)
    first = [m.task_id for m in drain(worker)]
    assert first == runs[:3]
    # the others stay queued, deferred to the refill, and say so once each
    assert not await engine.scheduler.run_round(tenant)
    assert drain(worker) == []
    assert (await engine.task_row(runs[3]))["status"] == "QUEUED"
    events = await engine.events(runs[3])
    assert [e for e, _ in events].count("REQUEUED_RATE_LIMIT") == 1
    used = await engine.repo.pool.fetchval("SELECT value FROM rate_limits WHERE key = 'api'")
    assert used == 3

    await asyncio.sleep(1.05)
    assert await engine.scheduler.run_round(tenant)
    assert [m.task_id for m in drain(worker)] == runs[3:6]
    assert [e for e, _ in await engine.events(runs[6])].count("REQUEUED_RATE_LIMIT") == 1


async def test_an_unknown_static_key_holds_the_task_and_names_the_key(
    engine: Replica, tenant: str
) -> None:
    await engine.register(tenant, limited({"key": "missing", "limit_values_expr": "-1"}))
    worker = await engine.connect_worker(tenant, ["limited:call"])
    (run,) = await trigger(engine, tenant, [{}])
    await engine.scheduler.run_round(tenant)
    assert drain(worker) == []
    row = await engine.repo.pool.fetchrow(
        "SELECT message FROM task_events WHERE task_id = $1 AND event_type = 'REQUEUED_RATE_LIMIT'",
        run,
    )
    assert row is not None and "rate limit 'missing' does not exist" in row["message"]


async def test_dynamic_limits_make_one_bucket_per_key_from_the_input(
    engine: Replica, tenant: str
) -> None:
    await engine.register(
        tenant,
        limited(
            {
                "key": "'LIMIT:'+input.group",
                "key_expr": "'LIMIT:'+input.group",
                "units_expr": "input.units",
                "limit_values_expr": "input.limit",
                "duration": "MINUTE",
            }
        ),
    )
    worker = await engine.connect_worker(tenant, ["limited:call"])
    runs = await trigger(
        engine,
        tenant,
        [{"group": g, "units": 2, "limit": 4} for g in ("a", "a", "a", "b")],
    )
    assert await engine.scheduler.run_round(tenant)
    assert sorted(m.task_id for m in drain(worker)) == sorted([runs[0], runs[1], runs[3]])
    limits = {
        r["key"]: (r["limit_value"], r["duration"], r["value"])
        for r in await engine.repo.pool.fetch("SELECT * FROM rate_limits")
    }
    assert limits == {"LIMIT:a": (4, "MINUTE", 4), "LIMIT:b": (4, "MINUTE", 2)}
    with pytest.raises(TriggerError, match="takes 5 units but the limit is 4"):
        await trigger(engine, tenant, [{"group": "a", "units": 5, "limit": 4}])


@pytest.mark.slow
async def test_two_replicas_share_one_bucket(dsn: str) -> None:
    replicas = [await Replica.start(dsn), await Replica.start(dsn)]
    try:
        tenant = await replicas[0].repo.ensure_tenant("tenant-rl")
        await replicas[0].repo.upsert_rate_limit(
            tenant_id=tenant, key="shared", limit=5, duration="SECOND"
        )
        await replicas[0].register(
            tenant, limited({"key": "shared", "units": 1, "limit_values_expr": "-1"})
        )
        sessions = [await r.connect_worker(tenant, ["limited:call"]) for r in replicas]
        runs = await trigger(replicas[0], tenant, [{}] * 20)
        received: list[str] = []
        deadline = time.monotonic() + 15
        while len(received) < len(runs):
            assert time.monotonic() < deadline, f"only {len(received)} assigned"
            await asyncio.gather(*(r.scheduler.run_round(tenant) for r in replicas))
            for session in sessions:
                received += [m.task_id for m in drain(session)]
            await asyncio.sleep(0.05)
        assert sorted(received) == sorted(runs)
        times = sorted(
            r["assigned_at"].timestamp()
            for r in await replicas[0].repo.pool.fetch("SELECT assigned_at FROM tasks")
        )
        # no one-second window ever holds more than the limit's five assignments
        for i, start in enumerate(times):
            assert sum(1 for t in times[i:] if t < start + 0.999) <= 5
    finally:
        for replica in replicas:
            await replica.close()


async def test_a_task_taking_more_than_an_existing_static_limit_is_refused_at_registration(
    engine: Replica, tenant: str
) -> None:
    await engine.repo.upsert_rate_limit(tenant_id=tenant, key="small", limit=2, duration="MINUTE")
    with pytest.raises(InvalidDefinition, match="takes 3 units of rate limit 'small'"):
        await engine.register(tenant, limited({"key": "small", "units": 3}))
    assert await engine.repo.pool.fetchval("SELECT count(*) FROM workflows") == 0
