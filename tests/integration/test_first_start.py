"""Engines starting at once on a new database: each gets the same tenant and encryption
secret. (CI once failed when two `hewer serve --processes 2` children raced: one read no
secret because its SELECT's snapshot predated the other's INSERT.)"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator

import pytest_asyncio
from tests.integration.test_transactions import Unobserved

from hewer.engine.db.base import create_pool
from hewer.engine.db.repository import Repository

ROUNDS = 20
ENGINES = 4


@pytest_asyncio.fixture
async def repos(dsn: str) -> AsyncIterator[list[Repository]]:
    # one pool per "engine", so the statements really run side by side
    pools = [await create_pool(dsn, size=1) for _ in range(ENGINES)]
    try:
        yield [Repository(pool, observer=Unobserved()) for pool in pools]
    finally:
        for pool in pools:
            await pool.close()


async def test_racing_engines_get_one_secret(repos: list[Repository]) -> None:
    for _ in range(ROUNDS):
        name = f"race-{uuid.uuid4()}"
        offered = [secrets.token_bytes(32) for _ in repos]
        got = await asyncio.gather(
            *(repo.ensure_secret(name, value) for repo, value in zip(repos, offered, strict=True))
        )
        assert len(set(got)) == 1, "every engine uses the same secret"
        assert got[0] in offered


async def test_racing_engines_get_one_tenant(repos: list[Repository]) -> None:
    for _ in range(ROUNDS):
        name = f"race-{uuid.uuid4()}"
        got = await asyncio.gather(*(repo.ensure_tenant(name) for repo in repos))
        assert len(set(got)) == 1
        assert all(uuid.UUID(tenant_id) for tenant_id in got)
