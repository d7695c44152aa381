"""Transactions begun and ended by hand (db/transactions.py): the notifications a transaction
makes go with its COMMIT, in order, and never when it or their savepoint rolls back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from hewer.engine.db.base import create_pool
from hewer.engine.db.repository import Repository

CHANNEL = "hewer_tx_probe"


class Unobserved:
    def task_events(self, tenant_id: str, events: Iterable[Any]) -> None:
        pass

    def run_finished(
        self, tenant_id: str, workflow_name: str, status: str, duration_ms: float
    ) -> None:
        pass


@pytest_asyncio.fixture
async def repo(dsn: str) -> AsyncIterator[Repository]:
    pool = await create_pool(dsn, size=2)
    try:
        yield Repository(pool, observer=Unobserved())
    finally:
        await pool.close()


@pytest_asyncio.fixture
async def heard(dsn: str) -> AsyncIterator[list[str]]:
    received: list[str] = []
    listener = await asyncpg.connect(dsn)
    await listener.add_listener(CHANNEL, lambda *args: received.append(args[3]))
    try:
        yield received
    finally:
        await listener.close()


async def settle() -> None:
    await asyncio.sleep(0.3)


async def test_notifications_are_sent_at_commit_in_order(
    repo: Repository, heard: list[str]
) -> None:
    payloads = ["plain", "it's 'quoted' $n0$ $$ \\ too", '{"json": [1, 2]}']
    async with repo.transaction() as conn:
        for payload in payloads:
            await repo.notify(conn, channel=CHANNEL, payload=payload)
        await settle()
        assert heard == []  # held back until the commit
    await settle()
    assert heard == payloads


async def test_a_rolled_back_transaction_or_savepoint_sends_nothing_of_its_own(
    repo: Repository, heard: list[str]
) -> None:
    with pytest.raises(RuntimeError):
        async with repo.transaction() as conn:
            await repo.notify(conn, channel=CHANNEL, payload="lost")
            raise RuntimeError("rolled back")

    async with repo.transaction() as conn:
        await repo.notify(conn, channel=CHANNEL, payload="kept")
        with pytest.raises(RuntimeError):
            async with repo.unit(conn) as inner:
                await repo.notify(inner, channel=CHANNEL, payload="dropped")
                raise RuntimeError("savepoint rolled back")
        async with repo.unit(conn) as inner:
            await repo.notify(inner, channel=CHANNEL, payload="released")
    await settle()
    assert heard == ["kept", "released"]


async def test_outside_a_transaction_a_notification_goes_at_once(
    repo: Repository, heard: list[str]
) -> None:
    async with repo.connection() as conn:
        await repo.notify(conn, channel=CHANNEL, payload="now")
        await settle()
        assert heard == ["now"]
        assert not conn.is_in_transaction()


async def test_a_failed_commit_leaves_the_connection_outside_a_transaction(
    repo: Repository,
) -> None:
    await repo.pool.execute("CREATE TABLE tx_probe (n int UNIQUE DEFERRABLE INITIALLY DEFERRED)")
    with pytest.raises(asyncpg.UniqueViolationError):
        async with repo.transaction() as conn:
            await conn.execute("INSERT INTO tx_probe VALUES (1), (1)")  # fails at COMMIT
    for _ in range(repo.pool.get_size()):
        async with repo.connection() as conn:
            assert not conn.is_in_transaction()
    assert await repo.pool.fetchval("SELECT count(*) FROM tx_probe") == 0
