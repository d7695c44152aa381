"""Tables that outgrew their statistics are analyzed by the engine (services/statistics.py,
migration 0023), without waiting for autovacuum's next visit."""

from __future__ import annotations

import asyncio
import contextlib
import time

import asyncpg
from tests.integration.harness import Replica

from hewer.engine.services.statistics import ANALYZE_FROM_ROWS, GROWTH, TableStatistics

# autovacuum is off for the scratch tables, so only the engine analyzes them here
SCRATCH = "CREATE TABLE {name} (id bigint, note text) WITH (autovacuum_enabled = false)"


async def write_rows(conn: asyncpg.Connection, name: str, count: int) -> None:
    await conn.execute(
        f"INSERT INTO {name} SELECT n, 'row ' || n FROM generate_series(1, $1) AS n", count
    )
    await report_counters(conn, name)


async def report_counters(conn: asyncpg.Connection, name: str) -> None:
    """Wait until the statistics show the table's live rows as they are."""
    live = await conn.fetchval(f"SELECT count(*) FROM {name}")
    deadline = time.monotonic() + 10
    while True:
        # a backend reports its row counters when idle, at most once a second unless told to
        with contextlib.suppress(asyncpg.UndefinedFunctionError):  # PostgreSQL 14
            await conn.execute("SELECT pg_stat_force_next_flush()")
        shown = await conn.fetchval(
            "SELECT n_live_tup FROM pg_stat_user_tables WHERE relname = $1", name
        )
        if shown == live or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.05)


async def described_rows(conn: asyncpg.Connection, name: str) -> float:
    """The rows the table's statistics describe (-1: never analyzed)."""
    return float(await conn.fetchval("SELECT reltuples FROM pg_class WHERE relname = $1", name))


async def test_a_table_without_statistics_is_analyzed_once_rows_arrive(engine: Replica) -> None:
    statistics = TableStatistics(repo=engine.repo)
    async with engine.repo.pool.acquire() as conn:
        await conn.execute(SCRATCH.format(name="fresh_rows"))
        await write_rows(conn, "fresh_rows", ANALYZE_FROM_ROWS - 1)
        await statistics.run_once()
        assert await described_rows(conn, "fresh_rows") == -1  # too few rows to matter

        await write_rows(conn, "fresh_rows", 1)
        await statistics.run_once()
        assert await described_rows(conn, "fresh_rows") == ANALYZE_FROM_ROWS


async def test_a_table_is_analyzed_again_only_when_it_outgrew_its_statistics(
    engine: Replica,
) -> None:
    async with engine.repo.pool.acquire() as conn:
        await conn.execute(SCRATCH.format(name="growing_rows"))
        await write_rows(conn, "growing_rows", ANALYZE_FROM_ROWS)
        await conn.execute("ANALYZE growing_rows")

        # short of GROWTH times what the statistics describe: autovacuum's to account for
        await write_rows(conn, "growing_rows", int((GROWTH - 1) * ANALYZE_FROM_ROWS) - 1)
        assert "growing_rows" not in await engine.repo.analyze_grown_tables(
            min_rows=ANALYZE_FROM_ROWS, growth=GROWTH
        )
        await write_rows(conn, "growing_rows", 1)
        assert "growing_rows" in await engine.repo.analyze_grown_tables(
            min_rows=ANALYZE_FROM_ROWS, growth=GROWTH
        )
        assert await described_rows(conn, "growing_rows") == GROWTH * ANALYZE_FROM_ROWS


async def test_a_table_that_only_churns_is_left_to_autovacuum(engine: Replica) -> None:
    async with engine.repo.pool.acquire() as conn:
        await conn.execute(SCRATCH.format(name="churning_rows"))
        await write_rows(conn, "churning_rows", ANALYZE_FROM_ROWS)
        await conn.execute("ANALYZE churning_rows")
        for _ in range(10):  # the queue's shape: many rows written, as many gone
            await conn.execute("DELETE FROM churning_rows")
            await write_rows(conn, "churning_rows", ANALYZE_FROM_ROWS)
        assert "churning_rows" not in await engine.repo.analyze_grown_tables(
            min_rows=ANALYZE_FROM_ROWS, growth=GROWTH
        )


async def test_a_table_being_analyzed_elsewhere_is_skipped_not_waited_for(
    engine: Replica,
) -> None:
    async with engine.repo.pool.acquire() as holder, engine.repo.pool.acquire() as conn:
        await conn.execute(SCRATCH.format(name="busy_rows"))
        await write_rows(conn, "busy_rows", ANALYZE_FROM_ROWS)
        async with holder.transaction():
            # the lock ANALYZE takes (another replica's ANALYZE, a partition change)
            await holder.execute("LOCK TABLE busy_rows IN SHARE UPDATE EXCLUSIVE MODE")
            await engine.repo.analyze_grown_tables(min_rows=ANALYZE_FROM_ROWS, growth=GROWTH)
            assert await described_rows(conn, "busy_rows") == -1
        await engine.repo.analyze_grown_tables(min_rows=ANALYZE_FROM_ROWS, growth=GROWTH)
        assert await described_rows(conn, "busy_rows") == ANALYZE_FROM_ROWS
