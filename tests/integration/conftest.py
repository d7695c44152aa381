"""Integration tests run against PostgreSQL: see ``tests/conftest.py`` for the fixtures."""

from __future__ import annotations

import pytest

# the REST tests' `world` (test_rest_api, test_rest_resources); a module's own fixture of the
# same name (test_events_webhooks) takes precedence in that module
from tests.integration.rest_world import world  # noqa: F401


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.integration)
