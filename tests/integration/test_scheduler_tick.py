"""The scheduler's safety tick (nothing woke it) with many workers and nothing to run."""

from __future__ import annotations

from typing import Any

import pytest
from tests.integration.harness import Replica, drain


def single() -> dict[str, Any]:
    return {"name": "solo", "tasks": [{"readable_id": "run", "action": "solo:run"}]}


@pytest.fixture
def capacity_reads(engine: Replica, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many workers each capacity read of the scheduler covered."""
    reads: list[int] = []
    original = engine.repo.local_worker_capacity

    async def counted(**kwargs: Any) -> Any:
        reads.append(len(kwargs["worker_ids"]))
        return await original(**kwargs)

    monkeypatch.setattr(engine.repo, "local_worker_capacity", counted)
    return reads


async def test_a_tick_with_nothing_ready_reads_no_worker_capacity(
    engine: Replica, tenant: str, capacity_reads: list[int]
) -> None:
    await engine.register(tenant, single())
    workers = [await engine.connect_worker(tenant, ["solo:run"], name=f"w{i}") for i in range(20)]
    assert not await engine.scheduler.run_round(tenant, only_if_ready=True)
    assert capacity_reads == []

    # a queued item that is not due yet (a retry's backoff) is not ready either
    run_id = await engine.trigger(tenant, "solo")
    await engine.repo.pool.execute(
        "UPDATE queue_items SET available_at = now() + interval '1 hour' WHERE task_id = $1",
        run_id,
    )
    assert not await engine.scheduler.run_round(tenant, only_if_ready=True)
    assert capacity_reads == []

    # once it is due, the tick assigns it
    await engine.repo.pool.execute(
        "UPDATE queue_items SET available_at = now() WHERE task_id = $1", run_id
    )
    assert await engine.scheduler.run_round(tenant, only_if_ready=True)
    assert capacity_reads == [20]
    assert sum(len(drain(w)) for w in workers) == 1


async def test_a_tick_ignores_items_for_actions_no_local_worker_serves(
    engine: Replica, tenant: str, capacity_reads: list[int]
) -> None:
    await engine.register(tenant, single())
    await engine.connect_worker(tenant, ["other:run"])
    await engine.trigger(tenant, "solo")
    assert not await engine.scheduler.run_round(tenant, only_if_ready=True)
    assert capacity_reads == []
    # a round something woke still reads (and finds no one to take the item)
    assert not await engine.scheduler.run_round(tenant)
    assert capacity_reads == [1]


async def test_the_scheduling_transaction_plans_generically_and_ends_cleanly(
    engine: Replica,
) -> None:
    repo = engine.repo
    await repo.pool.execute("CREATE TABLE sched_probe (n int)")
    try:
        async with repo.generic_plan_transaction() as conn:
            assert await conn.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
            await conn.execute("INSERT INTO sched_probe VALUES (1)")
        with pytest.raises(RuntimeError):
            async with repo.generic_plan_transaction() as conn:
                await conn.execute("INSERT INTO sched_probe VALUES (2)")
                raise RuntimeError("the round failed")
        # committed, then rolled back; every pooled session is back outside a transaction with
        # its default plan choice
        assert await repo.pool.fetchval("SELECT array_agg(n) FROM sched_probe") == [1]
        held = [await repo.pool.acquire() for _ in range(repo.pool.get_size())]
        try:
            for conn in held:
                assert not conn.is_in_transaction()
                assert await conn.fetchval("SHOW plan_cache_mode") == "auto"
        finally:
            for conn in held:
                await repo.pool.release(conn)
    finally:
        await repo.pool.execute("DROP TABLE sched_probe")
