"""End-to-end tests: a whole engine process, driven by the official hatchet-sdk.

Every test collected under ``tests/e2e/`` gets the ``e2e`` marker, so ``-m 'not e2e'`` skips
them for a quick run.

One engine (``hewer dev`` on a fresh embedded PostgreSQL, free ports) serves the session;
tests that need other engine settings start their own with ``e2e_support.start_engine``.
Workers are official SDK workers in subprocesses (``workers/worker.py``).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

_HERE = Path(__file__).resolve().parent
for _p in (_HERE, _HERE / "workers"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from e2e_support import Engine, WorkerProc, start_engine, start_worker  # noqa: E402
from e2e_workflows import CANCELLABLE, DAG, ECHO, RETRY, define  # noqa: E402
from hatchet_sdk import Hatchet  # noqa: E402


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    """The session's engine; its default tenant's token is ``engine.token``."""
    with start_engine() as e:
        yield e


@pytest.fixture(scope="session")
def mark_dir() -> Iterator[Path]:
    """Where workers leave their marks and logs (see ``e2e_workflows.mark``)."""
    path = Path(tempfile.mkdtemp(prefix="hewer-e2e-marks-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest_asyncio.fixture(scope="session")
async def hatchet(engine: Engine) -> AsyncIterator[Hatchet]:
    """An SDK client of the default tenant, built from an explicit ClientConfig."""
    yield engine.client()


@pytest.fixture(scope="session")
def workflows(hatchet: Hatchet) -> dict[str, Any]:
    """The e2e workflows declared on the test's client, for triggering and reading."""
    return define(hatchet)


@pytest.fixture(scope="session")
def main_worker(engine: Engine, mark_dir: Path) -> Iterator[WorkerProc]:
    """One SDK worker serving the echo, DAG, retry and cancellation workflows."""
    with start_worker(
        engine,
        name=f"e2e-main-{uuid.uuid4().hex[:6]}",
        workflows=[ECHO, DAG, RETRY, CANCELLABLE],
        mark_dir=mark_dir,
    ) as worker:
        yield worker
