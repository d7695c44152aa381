"""The plans of the engine's keyed lookups (queries/planning.sql ``engine_session``): the
generic plan of a hot statement reads a day partition of a few thousand rows through its
indexes, not from end to end, and never starts parallel workers."""

from __future__ import annotations

from collections.abc import Sequence

from tests.integration.harness import Replica

from hewer.engine.db.queries import query
from hewer.engine.services.retention import ensure_partitions
from hewer.engine.services.triggers import MAX_BULK, TriggerRequest

CHAIN = {
    "name": "plans-chain",
    "tasks": [
        {"readable_id": "a", "action": "plans:a"},
        {"readable_id": "b", "action": "plans:b", "parents": ["a"]},
    ],
}
# statistics taken at a thousand runs, then three times as many runs stored (short of the
# four times at which services/statistics.py analyzes again): more rows than the plans chose
# to read whole (they flipped to index probes at about ten thousand), few enough to write in
# a second
ANALYZED_AT = 1000
RUNS = 3000


async def generic_plan(
    engine: Replica, statement: str, *args: object, settings: Sequence[str] = ()
) -> str:
    """EXPLAIN of ``statement``'s generic plan, made on one of the engine's own connections
    (with ``settings``, each "name = value", for the transaction)."""
    async with engine.repo.pool.acquire() as conn, conn.transaction():
        for setting in ["plan_cache_mode = force_generic_plan", *settings]:
            await conn.execute(f"SET LOCAL {setting}")
        await conn.execute(f"PREPARE hot_lookup AS {statement}")
        try:
            literals = ", ".join(f"'{a}'" for a in args)
            rows = await conn.fetch(f"EXPLAIN EXECUTE hot_lookup({literals})")
        finally:
            await conn.execute("DEALLOCATE hot_lookup")
    return "\n".join(r[0] for r in rows)


async def test_engine_connections_plan_without_sequential_scans_or_parallel_workers(
    engine: Replica,
) -> None:
    async with engine.repo.pool.acquire() as conn:
        assert await conn.fetchval("SHOW enable_seqscan") == "off"
        assert await conn.fetchval("SHOW max_parallel_workers_per_gather") == "0"


async def test_a_hop_never_starts_parallel_workers(engine: Replica, tenant: str) -> None:
    # with a few days of history the planner found run_states worth two parallel workers;
    # here parallel plans are made free, so that only the session's setting can refuse them
    await ensure_partitions(engine.repo)
    await engine.register(tenant, CHAIN)
    (run_id,) = await engine.triggers.trigger(
        tenant_id=tenant, requests=[TriggerRequest(workflow_name="plans-chain", input={})]
    )
    free = (
        "parallel_setup_cost = 0",
        "parallel_tuple_cost = 0",
        "min_parallel_index_scan_size = 0",
    )
    plan = await generic_plan(engine, query("run_states"), "{" + run_id + "}", settings=free)
    assert "Gather" not in plan, plan


async def test_a_run_and_its_tasks_are_read_by_index_from_a_grown_partition(
    engine: Replica, tenant: str
) -> None:
    await ensure_partitions(engine.repo)  # the day partitions a serving engine has
    await engine.register(tenant, CHAIN)

    async def trigger(count: int) -> list[str]:
        ids: list[str] = []
        for _ in range(count // MAX_BULK):
            ids += await engine.triggers.trigger(
                tenant_id=tenant,
                requests=[TriggerRequest(workflow_name="plans-chain", input={})] * MAX_BULK,
            )
        return ids

    # statistics as the engine keeps them (ANALYZED_AT above)
    await trigger(ANALYZED_AT)
    async with engine.repo.pool.acquire() as conn:
        await conn.execute("SELECT hewer_analyze_grown_tables(1000, 4)")
        today = await conn.fetchval("SELECT tableoid::regclass::text FROM tasks LIMIT 1")
    run_ids = await trigger(RUNS - ANALYZED_AT)
    # the DAG hop's read of its runs with their tasks (queries/runs.sql run_states)
    plan = await generic_plan(engine, query("run_states"), "{" + run_ids[-1] + "}")
    assert f"Seq Scan on {today} " not in plan, plan
    assert f"{today}_run_step_key" in plan, plan  # an index scan, or a bitmap one
