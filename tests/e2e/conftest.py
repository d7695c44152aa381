"""End-to-end tests: a whole engine process, driven by the official hatchet-sdk.

Every test collected under ``tests/e2e/`` gets the ``e2e`` marker, so ``-m 'not e2e'`` skips
them for a quick run.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.e2e)
