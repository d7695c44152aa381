"""Integration tests run against PostgreSQL: see ``tests/conftest.py`` for the database
fixtures. Here: one in-process engine replica (``engine``) and a tenant in it (``tenant``).
A module or test marked ``engine_options(**options)`` gets a replica started with those
``Replica.start`` options (test_timers, test_heartbeats: a short heartbeat timeout)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from tests.integration.harness import Replica

# the REST tests' `world` (test_rest_api, test_rest_resources); a module's own fixture of the
# same name (test_events_webhooks) takes precedence in that module
from tests.integration.rest_world import world  # noqa: F401


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "engine_options(**options): Replica.start options for the engine fixture"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.integration)


@pytest_asyncio.fixture
async def engine(dsn: str, request: pytest.FixtureRequest) -> AsyncIterator[Replica]:
    marker = request.node.get_closest_marker("engine_options")
    replica = await Replica.start(dsn, **(marker.kwargs if marker else {}))
    try:
        yield replica
    finally:
        await replica.close()


@pytest_asyncio.fixture
async def tenant(engine: Replica) -> str:
    return await engine.repo.ensure_tenant("tenant-a")
