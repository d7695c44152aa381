"""The database fixtures themselves: a real server, isolation, NOTIFY, SKIP LOCKED."""

from __future__ import annotations

import asyncio

import asyncpg

from hewer.engine.db.migrate import MIGRATIONS_TABLE, migration_files


async def test_select_one(pool: asyncpg.Pool) -> None:
    assert await pool.fetchval("SELECT 1") == 1


async def test_template_is_migrated(pool: asyncpg.Pool) -> None:
    versions = [r["version"] for r in await pool.fetch(f"SELECT version FROM {MIGRATIONS_TABLE}")]
    assert sorted(versions) == [v for v, _, _ in migration_files()]


async def test_each_test_gets_its_own_database(dsn: str, pool: asyncpg.Pool) -> None:
    name = await pool.fetchval("SELECT current_database()")
    assert name.startswith("t_") and name in dsn
    await pool.execute("CREATE TABLE only_here (x int)")  # would collide if shared


async def test_each_test_gets_its_own_database_again(pool: asyncpg.Pool) -> None:
    await pool.execute("CREATE TABLE only_here (x int)")


async def test_listen_notify_round_trip(pool: asyncpg.Pool) -> None:
    received: asyncio.Queue[str] = asyncio.Queue()

    def on_notify(conn: object, pid: int, channel: str, payload: object) -> None:
        received.put_nowait(str(payload))

    async with pool.acquire() as listener:
        await listener.add_listener("hewer_test", on_notify)
        try:
            async with pool.acquire() as sender, sender.transaction():
                await sender.execute("SELECT pg_notify('hewer_test', 'hello')")
                await asyncio.sleep(0.05)
                assert received.empty()  # delivered only at commit
            assert await asyncio.wait_for(received.get(), timeout=5) == "hello"
        finally:
            await listener.remove_listener("hewer_test", on_notify)


async def test_skip_locked_claims_are_disjoint(pool: asyncpg.Pool) -> None:
    await pool.execute(
        "CREATE TABLE queue (id int PRIMARY KEY, claimed_by text);"
        "INSERT INTO queue (id) SELECT generate_series(1, 100)"
    )
    start = asyncio.Event()

    async def claim(worker: str) -> list[int]:
        async with pool.acquire() as conn, conn.transaction():
            await start.wait()
            rows = await conn.fetch(
                "SELECT id FROM queue WHERE claimed_by IS NULL ORDER BY id "
                "LIMIT 30 FOR UPDATE SKIP LOCKED"
            )
            ids = [int(r["id"]) for r in rows]
            await conn.execute("UPDATE queue SET claimed_by = $1 WHERE id = ANY($2)", worker, ids)
            await asyncio.sleep(0.05)  # hold the locks while the others claim
            return ids

    tasks = [asyncio.create_task(claim(f"w{i}")) for i in range(3)]
    await asyncio.sleep(0.05)
    start.set()
    claims = await asyncio.gather(*tasks)
    flat = [i for ids in claims for i in ids]
    assert len(flat) == len(set(flat)) == 90
    assert await pool.fetchval("SELECT count(*) FROM queue WHERE claimed_by IS NULL") == 10
