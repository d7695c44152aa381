"""Shared fixtures: one PostgreSQL per session, a migrated template, a fresh database per test.

By default the server is an embedded PostgreSQL in a temp directory (run as ``nobody`` when
the tests run as root). ``HEWER_TEST_DATABASE_URL`` points the fixtures at an external server
instead; its user needs CREATEDB. Each test that asks for ``dsn`` gets
``CREATE DATABASE t_<hex> TEMPLATE hewer_template``: a copy of the migrated schema in a few
milliseconds, dropped afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio

from hewer.engine.db.embedded import EmbeddedPostgres
from hewer.engine.db.migrate import apply_migrations


def database_dsn(server_dsn: str, database: str) -> str:
    """``server_dsn`` with its database name replaced by ``database``."""
    parts = urlsplit(server_dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """DSN of a superuser (or CREATEDB user) connection to the session's server."""
    external = os.environ.get("HEWER_TEST_DATABASE_URL")
    if external:
        yield external
        return
    # mkdtemp makes a 0700 directory: open it so that `nobody` (the server, when we are
    # root) can traverse it. /tmp itself is world-traversable.
    base = Path(tempfile.mkdtemp(prefix="hewer-test-pg-"))
    base.chmod(0o755)
    pg = EmbeddedPostgres(data_dir=base / "pg")
    try:
        yield pg.start()
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


async def _create_database(server_dsn: str, name: str, *, template: str | None = None) -> str:
    conn = await asyncpg.connect(server_dsn)
    try:
        suffix = f" TEMPLATE {template}" if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{suffix}')
    finally:
        await conn.close()
    return database_dsn(server_dsn, name)


async def _drop_database(server_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest_asyncio.fixture(scope="session")
async def template_database(pg_server: str) -> AsyncIterator[str]:
    """Name of a database with every migration applied, used as the per-test template."""
    # A shared external server may host several sessions at once: keep their names apart.
    name = (
        f"hewer_template_{uuid.uuid4().hex[:8]}"
        if os.environ.get("HEWER_TEST_DATABASE_URL")
        else "hewer_template"
    )
    await _drop_database(pg_server, name)
    await apply_migrations(await _create_database(pg_server, name))
    yield name
    await _drop_database(pg_server, name)


@pytest_asyncio.fixture
async def dsn(pg_server: str, template_database: str) -> AsyncIterator[str]:
    """DSN of a fresh, migrated database, dropped after the test."""
    name = f"t_{uuid.uuid4().hex}"
    yield await _create_database(pg_server, name, template=template_database)
    await _drop_database(pg_server, name)


@pytest_asyncio.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool on ``dsn``."""
    async with asyncpg.create_pool(dsn, min_size=1, max_size=10) as p:
        yield p


@pytest_asyncio.fixture
async def empty_database(pg_server: str) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """A factory of empty databases (no migrations), all dropped after the test."""
    names: list[str] = []

    async def make() -> str:
        name = f"e_{uuid.uuid4().hex}"
        names.append(name)
        return await _create_database(pg_server, name)

    yield make
    for name in names:
        await _drop_database(pg_server, name)
