"""Schema migrations: ``db/sql/migrations/NNNN_description.sql``, applied in numeric order.

Each file runs in its own transaction together with the row that records it in
``hewer_schema_migrations``, so a migration is either fully applied and recorded or not at
all. A session-level advisory lock serialises engines that start at the same time against
one database: the second one waits, then finds nothing left to do.

``db/sql/schema.sql`` is the same schema as one file (``scripts/dump-schema`` regenerates it;
``tests/integration/test_schema.py`` checks that both stay equal).
"""

from __future__ import annotations

import logging
import re
from importlib import resources
from importlib.resources.abc import Traversable

import asyncpg

__all__ = ["MIGRATIONS_TABLE", "apply_migrations", "migration_files", "schema_sql"]

log = logging.getLogger(__name__)

MIGRATIONS_TABLE = "hewer_schema_migrations"
_LOCK_KEY_SQL = "hashtext('hewer_migrations')"
_FILE_RE = re.compile(r"^(?P<version>\d{4,})_(?P<slug>[A-Za-z0-9_\-]+)\.sql$")

_CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
    version int PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


def _sql_dir() -> Traversable:
    return resources.files("hewer.engine.db").joinpath("sql")


def migration_files() -> list[tuple[int, str, str]]:
    """All migrations as ``(version, name, sql)``, sorted by version.

    ``name`` is the file name without ``.sql`` (e.g. ``0001_init``). Files that do not match
    ``NNNN_description.sql`` are ignored; two files with one version number are an error.
    """
    directory = _sql_dir().joinpath("migrations")
    if not directory.is_dir():
        return []
    found: dict[int, tuple[int, str, str]] = {}
    for entry in directory.iterdir():
        match = _FILE_RE.match(entry.name)
        if match is None or not entry.is_file():
            continue
        version = int(match["version"])
        name = entry.name.removesuffix(".sql")
        if version in found:
            raise RuntimeError(
                f"two migrations share version {version}: {found[version][1]} and {name}"
            )
        found[version] = (version, name, entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def schema_sql() -> str:
    """The full schema (``db/sql/schema.sql``), equivalent to applying every migration."""
    return _sql_dir().joinpath("schema.sql").read_text(encoding="utf-8")


async def apply_migrations(dsn: str, *, before: int | None = None) -> list[str]:
    """Apply every migration not yet recorded in ``dsn`` (with ``before``, only those numbered
    below it: the schema of an older release, for upgrade tests); return the names applied."""
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        return await _apply_on(conn, before=before)
    finally:
        await conn.close()


async def _apply_on(conn: asyncpg.Connection, *, before: int | None = None) -> list[str]:
    # Session-level lock (not xact): it must span several transactions, one per file.
    await conn.execute(f"SELECT pg_advisory_lock({_LOCK_KEY_SQL})")
    try:
        await conn.execute(_CREATE_TABLE)
        rows = await conn.fetch(f"SELECT version FROM {MIGRATIONS_TABLE}")
        done = {int(r["version"]) for r in rows}
        applied: list[str] = []
        for version, name, sql in migration_files():
            if version in done:
                continue
            if before is not None and version >= before:
                break
            log.info("applying migration %s", name)
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    f"INSERT INTO {MIGRATIONS_TABLE} (version, name) VALUES ($1, $2)",
                    version,
                    name,
                )
            applied.append(name)
        return applied
    finally:
        await conn.execute(f"SELECT pg_advisory_unlock({_LOCK_KEY_SQL})")
