"""The scheduler's safety tick (nothing woke it) with many workers and nothing to run, and the
loop's wake-ups once a round has drained the queue."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.integration.harness import Replica, drain, eventually, next_message

from hewer.engine.db.repository import Conn


def single() -> dict[str, Any]:
    return {"name": "solo", "tasks": [{"readable_id": "run", "action": "solo:run"}]}


@pytest.fixture
def capacity_reads(engine: Replica, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many workers each capacity read of the scheduler returned (those serving an action
    with a ready item)."""
    reads: list[int] = []
    original = engine.repo.worker_capacity

    async def counted(**kwargs: Any) -> Any:
        rows = await original(**kwargs)
        reads.append(len(rows))
        return rows

    monkeypatch.setattr(engine.repo, "worker_capacity", counted)
    return reads


@pytest.fixture
def claim_transactions(engine: Replica, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per transaction a scheduling round opened."""
    opened: list[int] = []
    original = engine.repo.generic_plan_transaction

    @contextlib.asynccontextmanager
    async def counted() -> AsyncIterator[Conn]:
        opened.append(1)
        async with original() as conn:
            yield conn

    monkeypatch.setattr(engine.repo, "generic_plan_transaction", counted)
    return opened


async def test_a_tick_with_nothing_ready_reads_no_worker_and_opens_no_transaction(
    engine: Replica, tenant: str, capacity_reads: list[int], claim_transactions: list[int]
) -> None:
    await engine.register(tenant, single())
    workers = [await engine.connect_worker(tenant, ["solo:run"], name=f"w{i}") for i in range(20)]
    assert not await engine.scheduler.run_round(tenant, only_if_ready=True)
    assert (capacity_reads, claim_transactions) == ([0], [])

    # a queued item that is not due yet (a retry's backoff) is not ready either
    run_id = await engine.trigger(tenant, "solo")
    await engine.repo.pool.execute(
        "UPDATE queue_items SET available_at = now() + interval '1 hour' WHERE task_id = $1",
        run_id,
    )
    assert not await engine.scheduler.run_round(tenant, only_if_ready=True)
    assert (capacity_reads, claim_transactions) == ([0, 0], [])

    # once it is due, the tick assigns it
    await engine.repo.pool.execute(
        "UPDATE queue_items SET available_at = now() WHERE task_id = $1", run_id
    )
    assert await engine.scheduler.run_round(tenant, only_if_ready=True)
    assert (capacity_reads, claim_transactions) == ([0, 0, 20], [1])
    assert sum(len(drain(w)) for w in workers) == 1


async def test_only_workers_serving_a_ready_action_are_read(
    engine: Replica, tenant: str, capacity_reads: list[int]
) -> None:
    await engine.register(tenant, single())
    await engine.connect_worker(tenant, ["other:run"])
    await engine.trigger(tenant, "solo")
    assert not await engine.scheduler.run_round(tenant, only_if_ready=True)
    # a round something woke, while every worker serves the same actions, skips the probe
    # (it could exclude no worker, and the claim probes those actions again)
    assert not await engine.scheduler.run_round(tenant)
    assert capacity_reads == [0, 1]

    # of 31 workers serving two sets of actions, the 5 that serve the ready action
    busy = [await engine.connect_worker(tenant, ["solo:run", "other:run"]) for _ in range(5)]
    for i in range(25):
        await engine.connect_worker(tenant, ["other:run"], name=f"idle{i}")
    assert await engine.scheduler.run_round(tenant)
    assert capacity_reads == [0, 1, 5]
    assert sum(len(drain(w)) for w in busy) == 1


async def test_once_drained_a_freed_slot_opens_no_transaction_until_something_is_queued(
    engine: Replica, tenant: str, capacity_reads: list[int], claim_transactions: list[int]
) -> None:
    await engine.register(tenant, single())
    worker = await engine.connect_worker(tenant, ["solo:run"])
    engine.scheduler.start()
    await asyncio.sleep(0.2)  # the bus's start-up resync may wake one empty round
    capacity_reads.clear()
    claim_transactions.clear()
    await engine.trigger(tenant, "solo")  # its wake-up is echoed to this replica's loop
    first = await next_message(worker)
    await asyncio.sleep(0.3)
    # the claim asked for 100 (the worker's slots) and got 1: no second round at once, and
    # the trigger's NOTIFY, coming back to the replica that echoed it, wakes nothing
    assert (capacity_reads, claim_transactions) == ([1], [1])

    reads = len(capacity_reads)  # the safety tick may have read meanwhile
    await engine.lifecycle.completed(
        tenant_id=tenant, task_id=first.task_id, retry_count=0, output="{}"
    )
    # the freed slot woke the loop: it read no worker (nothing is ready), and stopped there;
    # the one transaction more is the completion's own
    await eventually(lambda: len(capacity_reads) > reads)
    assert [n for n in capacity_reads if n] == [1]
    assert claim_transactions == [1, 1]

    # queued again: the wake-up goes straight to a round that assigns it
    await engine.trigger(tenant, "solo")
    await next_message(worker)
    assert [n for n in capacity_reads if n] == [1, 1]
    assert claim_transactions == [1, 1, 1]


async def test_a_full_claim_goes_again_without_a_wake_up(
    engine: Replica, tenant: str, capacity_reads: list[int], claim_transactions: list[int]
) -> None:
    await engine.register(tenant, single())
    for _ in range(3):
        await engine.trigger(tenant, "solo")
    worker = await engine.connect_worker(tenant, ["solo:run"], slots={"default": 2})
    engine.scheduler.start()
    engine.scheduler.wake()
    # two fill the worker (a full claim), the next round finds no room and claims nothing
    await eventually(lambda: len(capacity_reads) == 2)
    assert len(drain(worker)) == 2
    await asyncio.sleep(0.2)
    assert capacity_reads == [1, 1]
    assert len(claim_transactions) == 2  # the second, opened beside its read, found no room


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
