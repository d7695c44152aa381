"""Integration tests run against PostgreSQL: see ``tests/conftest.py`` for the database
fixtures. Here: one in-process engine replica (``engine``) and a tenant in it (``tenant``);
a module may define its own ``engine`` (test_timers: a short heartbeat timeout)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from tests.integration.harness import Replica

# the REST tests' `world` (test_rest_api, test_rest_resources); a module's own fixture of the
# same name (test_events_webhooks) takes precedence in that module
from tests.integration.rest_world import world  # noqa: F401


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.integration)


@pytest_asyncio.fixture
async def engine(dsn: str) -> AsyncIterator[Replica]:
    replica = await Replica.start(dsn)
    try:
        yield replica
    finally:
        await replica.close()


@pytest_asyncio.fixture
async def tenant(engine: Replica) -> str:
    return await engine.repo.ensure_tenant("tenant-a")
