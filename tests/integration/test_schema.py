"""``db/sql/schema.sql`` must describe exactly the schema the migrations build.

Two empty databases: one gets every migration, the other ``schema.sql``. Their catalogs are
then described the same way (tables, columns with types, defaults and nullability, indexes,
constraints, functions, triggers, types, sequences, views, extensions) and must be equal.
When this fails after a new migration, run ``scripts/dump-schema`` and commit the result.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg

from hewer.engine.db.migrate import apply_migrations, schema_sql

CATALOG_QUERIES: dict[str, str] = {
    "relations": """
        SELECT c.relname, c.relkind::text, c.relpersistence::text,
               pg_get_partkeydef(c.oid) AS partkey
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
    """,
    "columns": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) AS type,
               pg_get_expr(d.adbin, d.adrelid) AS default, a.attnotnull,
               a.attidentity::text, a.attgenerated::text
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = 'public' AND a.attnum > 0 AND NOT a.attisdropped
          AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
    """,
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'",
    "constraints": """
        SELECT c.conrelid::regclass::text AS rel, c.conname, c.contype::text,
               pg_get_constraintdef(c.oid) AS def
        FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
        WHERE n.nspname = 'public'
    """,
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args,
               pg_get_functiondef(p.oid) AS def
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND p.prokind IN ('f', 'p')
    """,
    "triggers": """
        SELECT t.tgrelid::regclass::text AS rel, t.tgname, pg_get_triggerdef(t.oid) AS def
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND NOT t.tgisinternal
    """,
    "types": """
        SELECT t.typname, t.typtype::text,
               array_remove(array_agg(e.enumlabel ORDER BY e.enumsortorder), NULL) AS labels
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        LEFT JOIN pg_enum e ON e.enumtypid = t.oid
        WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'c')
          AND (t.typtype <> 'c' OR t.typrelid IN (
              SELECT oid FROM pg_class WHERE relkind = 'c'))
        GROUP BY t.typname, t.typtype
    """,
    "sequences": """
        SELECT sequencename, data_type::text, start_value, increment_by, cycle
        FROM pg_sequences WHERE schemaname = 'public'
    """,
    "views": """
        SELECT c.relname, pg_get_viewdef(c.oid) AS def
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('v', 'm')
    """,
    "extensions": "SELECT extname FROM pg_extension",
}


async def describe(dsn: str) -> dict[str, list[tuple[object, ...]]]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            name: sorted((tuple(row) for row in await conn.fetch(sql)), key=repr)
            for name, sql in CATALOG_QUERIES.items()
        }
    finally:
        await conn.close()


async def test_schema_sql_matches_migrations(
    empty_database: Callable[[], Awaitable[str]],
) -> None:
    migrated, loaded = await empty_database(), await empty_database()
    await apply_migrations(migrated)
    conn = await asyncpg.connect(loaded)
    try:
        await conn.execute(schema_sql())
    finally:
        await conn.close()

    from_migrations, from_schema = await describe(migrated), await describe(loaded)
    assert from_migrations["columns"], "the migrations created no tables"
    for section in CATALOG_QUERIES:
        missing = set(from_migrations[section]) - set(from_schema[section])
        extra = set(from_schema[section]) - set(from_migrations[section])
        assert not missing and not extra, (
            f"schema.sql differs from the migrations in {section}: only in the migrations "
            f"{sorted(missing, key=repr)}, only in schema.sql {sorted(extra, key=repr)}; "
            "run scripts/dump-schema"
        )


async def test_migrations_are_idempotent(empty_database: Callable[[], Awaitable[str]]) -> None:
    dsn = await empty_database()
    first = await apply_migrations(dsn)
    assert first, "no migrations found"
    assert await apply_migrations(dsn) == []
