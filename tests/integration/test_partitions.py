"""Runs, tasks and task events (migration 0016) and user events (0019) partitioned by UTC
day (services/retention.py).

The per-test databases start without day partitions (every row goes to DEFAULT, as in a
database migrated from before 0016); these tests create them the way the engine does.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest
from tests.integration.harness import Replica

from hewer.engine.core.ids import day_bounds, new_run_id, task_id_for
from hewer.engine.db.migrate import apply_migrations
from hewer.engine.services import retention
from hewer.engine.services.events import Events, NewEvent
from hewer.engine.services.metrics import METRICS
from hewer.engine.services.retention import DAYS_AHEAD, Retention, ensure_partitions

WORKFLOW = {"name": "kept", "tasks": [{"readable_id": "run", "action": "kept:run"}]}
DAG = {
    "name": "chain",
    "tasks": [
        {"readable_id": "a", "action": "chain:a"},
        {"readable_id": "b", "action": "chain:b", "parents": ["a"]},
    ],
}


def midday(days_ago: int) -> datetime:
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days_ago)


async def partition_of(
    pool: asyncpg.Pool | asyncpg.Connection, table: str, key: str, value: str
) -> str:
    return str(
        await pool.fetchval(f"SELECT tableoid::regclass::text FROM {table} WHERE {key} = $1", value)
    )


async def add_run(
    pool: asyncpg.Pool, *, tenant: str, at: datetime, finished_at: datetime | None
) -> str:
    """A one-task run created at ``at`` with an event, a log line and a queue item, written
    the way the engine leaves them (ids stamped with ``at``)."""
    run_id = new_run_id(millis=int(at.timestamp() * 1000))
    wf = await pool.fetchrow(
        "SELECT w.id AS workflow_id, v.id AS version_id, s.id AS step_id"
        " FROM workflows w JOIN workflow_versions v ON v.workflow_id = w.id"
        " JOIN steps s ON s.workflow_version_id = v.id WHERE w.name = 'kept' AND w.tenant_id = $1",
        tenant,
    )
    status = "COMPLETED" if finished_at else "RUNNING"
    await pool.execute(
        "INSERT INTO workflow_runs (id, tenant_id, workflow_id, workflow_version_id, status,"
        " created_at, finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        run_id, tenant, wf["workflow_id"], wf["version_id"], status, at, finished_at,
    )  # fmt: skip
    await pool.execute(
        "INSERT INTO tasks (id, tenant_id, workflow_run_id, step_id, readable_id, action_id,"
        " status, created_at, finished_at) VALUES ($1, $2, $1, $3, 'run', 'kept:run', $4, $5, $6)",
        run_id, tenant, wf["step_id"], status, at, finished_at,
    )  # fmt: skip
    await pool.execute(
        "INSERT INTO task_events (tenant_id, task_id, workflow_run_id, retry_count, event_type)"
        " VALUES ($1, $2, $2, 0, 'QUEUED')",
        tenant, run_id,
    )  # fmt: skip
    await pool.execute(
        "INSERT INTO log_lines (tenant_id, task_id, message) VALUES ($1, $2, 'hello')",
        tenant, run_id,
    )  # fmt: skip
    return run_id


async def add_event(pool: asyncpg.Pool | asyncpg.Connection, *, tenant: str, at: datetime) -> str:
    """A user event stored at ``at`` (its id stamped with ``at``, as the engine does)."""
    event_id = new_run_id(millis=int(at.timestamp() * 1000))
    await pool.execute(
        "INSERT INTO events (id, tenant_id, key, created_at) VALUES ($1, $2, 'user:made', $3)",
        event_id,
        tenant,
        at,
    )
    return event_id


def deferred(change: str) -> float:
    """hewer_partition_changes_deferred_total{change} of this process."""
    value = METRICS.registry.get_sample_value(
        "hewer_partition_changes_deferred_total", {"change": change}
    )
    return value or 0.0


async def count(pool: asyncpg.Pool, sql: str, *args: object) -> int:
    return int(await pool.fetchval(sql, *args))


async def test_new_rows_land_in_their_days_partition(
    engine: Replica, tenant: str, pool: asyncpg.Pool
) -> None:
    created = await ensure_partitions(engine.repo)
    today = datetime.now(UTC).date()
    assert today in created and today + timedelta(days=DAYS_AHEAD) in created
    assert await ensure_partitions(engine.repo) == []  # idempotent
    await engine.register(tenant, DAG)
    run_id = await engine.trigger(tenant, "chain")
    suffix = today.strftime("%Y%m%d")
    assert await partition_of(pool, "workflow_runs", "id", run_id) == f"workflow_runs_p{suffix}"
    task_ids = [
        str(r["id"])
        for r in await pool.fetch("SELECT id FROM tasks WHERE workflow_run_id = $1", run_id)
    ]
    assert task_ids
    for task_id in task_ids:
        assert await partition_of(pool, "tasks", "id", task_id) == f"tasks_p{suffix}"
        assert (
            await partition_of(pool, "task_events", "task_id", task_id) == f"task_events_p{suffix}"
        )
    lower, upper = day_bounds(today)
    assert lower <= run_id < upper
    events = Events(repo=engine.repo, triggers=engine.triggers)
    events.matches = engine.matches
    [stored] = await events.push(
        tenant_id=tenant,
        events=[NewEvent(key="user:made", payload={}, additional_metadata={}, scope=None)],
    )
    assert await partition_of(pool, "events", "id", stored.id) == f"events_p{suffix}"
    # one task per step of a run, enforced in the run's partition
    with pytest.raises(asyncpg.UniqueViolationError):
        await pool.execute(
            "INSERT INTO tasks (id, tenant_id, workflow_run_id, step_id, readable_id, action_id,"
            " status) SELECT $2, tenant_id, workflow_run_id, step_id, readable_id, action_id,"
            " status FROM tasks WHERE id = $1",
            task_ids[0],
            task_id_for(run_id),
        )


async def test_a_day_with_rows_in_default_gets_no_partition(
    engine: Replica, tenant: str, pool: asyncpg.Pool
) -> None:
    await engine.register(tenant, WORKFLOW)
    # a row of a day ten days ahead written before that day has a partition (a replica
    # whose clock runs fast, or a database upgraded from random ids)
    ahead = midday(-10)
    await add_run(pool, tenant=tenant, at=ahead, finished_at=None)
    created = await engine.repo.ensure_partitions(
        first_day=ahead.date() - timedelta(days=1), days=3
    )
    assert created == [ahead.date() - timedelta(days=1), ahead.date() + timedelta(days=1)]
    assert ahead.date() not in await engine.repo.partition_days()


async def test_retention_drops_a_whole_expired_day_with_its_dependents(
    engine: Replica, tenant: str, pool: asyncpg.Pool
) -> None:
    await engine.register(tenant, WORKFLOW)
    old, blocked_day = midday(40), midday(35)
    await engine.repo.ensure_partitions(first_day=old.date(), days=6)
    expired = [
        await add_run(pool, tenant=tenant, at=old, finished_at=old + timedelta(minutes=1))
        for _ in range(3)
    ]
    # a day that still holds a running run stays, with its finished runs (they wait for the
    # day's drop rather than being deleted one by one)
    running = await add_run(pool, tenant=tenant, at=blocked_day, finished_at=None)
    done = await add_run(pool, tenant=tenant, at=blocked_day, finished_at=blocked_day)
    # runs in DEFAULT (older than the partitions) are deleted row by row, dependents too
    legacy = await add_run(pool, tenant=tenant, at=midday(60), finished_at=midday(60))
    assert await partition_of(pool, "workflow_runs", "id", legacy) == "workflow_runs_default"
    # events go with their day (one with runs, one with none) or, in DEFAULT, row by row
    await add_event(pool, tenant=tenant, at=old)
    await add_event(pool, tenant=tenant, at=midday(38))
    kept_event = await add_event(pool, tenant=tenant, at=blocked_day)
    legacy_event = await add_event(pool, tenant=tenant, at=midday(60))
    assert await partition_of(pool, "events", "id", legacy_event) == "events_default"

    deleted = await Retention(repo=engine.repo, default_hours=720, interval_seconds=3600).run_once()

    # days 40 (three runs) to 36 (empty) ago go; day 35 stays
    assert deleted["days"] == 5 and deleted["runs"] == 3 + 1
    assert deleted["events"] == 2 + 1
    assert await pool.fetchval("SELECT to_regclass($1)", f"events_p{old:%Y%m%d}") is None
    assert {str(r["id"]) for r in await pool.fetch("SELECT id FROM events")} == {kept_event}
    assert old.date() not in await engine.repo.partition_days()
    assert await pool.fetchval("SELECT to_regclass($1)", f"tasks_p{old:%Y%m%d}") is None
    assert await pool.fetchval("SELECT to_regclass($1)", f"task_events_p{old:%Y%m%d}") is None
    left = {str(r["id"]) for r in await pool.fetch("SELECT id FROM workflow_runs")}
    assert left == {running, done}
    gone = [*expired, legacy]
    assert await count(pool, "SELECT count(*) FROM tasks WHERE id = ANY($1::uuid[])", gone) == 0
    assert (
        await count(pool, "SELECT count(*) FROM task_events WHERE task_id = ANY($1::uuid[])", gone)
        == 0
    )
    assert (
        await count(pool, "SELECT count(*) FROM log_lines WHERE task_id = ANY($1::uuid[])", gone)
        == 0
    )
    assert await count(pool, "SELECT count(*) FROM log_lines") == 2

    # once the last run finishes, long enough ago, its day goes too
    await pool.execute(
        "UPDATE workflow_runs SET status = 'COMPLETED', finished_at = $2 WHERE id = $1",
        running,
        blocked_day,
    )
    deleted = await Retention(repo=engine.repo, default_hours=720, interval_seconds=3600).run_once()
    assert deleted["days"] == 1 and deleted["runs"] == 2 and deleted["events"] == 1
    assert await count(pool, "SELECT count(*) FROM workflow_runs") == 0
    assert await count(pool, "SELECT count(*) FROM events") == 0


async def test_partition_changes_behind_a_long_reader_hold_up_others_briefly(
    engine: Replica, tenant: str, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creating or dropping a day's partitions needs the three tables to itself; while a long
    transaction reads one of them, every statement on a table the change already holds queues
    behind it. The change gives up after PARTITION_LOCK_WAIT (three tries) and leaves its
    work to the next pass, and the rest of the pass runs; once the reader is gone both
    happen. (Before migration 0018 the creation waited for the reader and so did every write
    of a run.)"""
    monkeypatch.setattr(retention, "PARTITION_RETRY_PAUSE_SECONDS", 0.2)
    await engine.register(tenant, WORKFLOW)
    old = midday(33)  # expired, but inside SPARE_GRACE: only the drop removes it
    await engine.repo.ensure_partitions(first_day=old.date(), days=1)
    expired = await add_run(pool, tenant=tenant, at=old, finished_at=old + timedelta(minutes=1))
    legacy = await add_run(pool, tenant=tenant, at=midday(60), finished_at=midday(60))
    pass_ = Retention(repo=engine.repo, default_hours=720, interval_seconds=3600)
    today = datetime.now(UTC).date()

    reader = await pool.acquire()
    probe = await pool.acquire()
    reader_tx = reader.transaction()
    retention_pass: asyncio.Task[dict[str, int]] | None = None
    before = {k: deferred(k) for k in ("create", "drop")}
    try:
        await probe.execute("SET statement_timeout = '10s'")  # fail, not hang, on old code
        await reader_tx.start()
        await reader.fetchval("SELECT count(*) FROM tasks")  # holds tasks until it ends
        retention_pass = asyncio.create_task(pass_.run_once())
        longest = 0.0
        while not retention_pass.done():
            started = time.monotonic()
            # what the hot path does all the time: a write to the first table a change locks
            await probe.execute(
                "UPDATE workflow_runs SET additional_metadata = additional_metadata WHERE id = $1",
                legacy,
            )
            longest = max(longest, time.monotonic() - started)
            await asyncio.sleep(0.005)
        deleted = retention_pass.result()
    finally:
        await reader_tx.rollback()
        if retention_pass is not None and not retention_pass.done():
            retention_pass.cancel()
        await pool.release(reader)
        await pool.release(probe)

    assert longest < 0.5, f"a statement waited {longest:.3f} s behind a partition change"
    days = await engine.repo.partition_days()
    assert deleted["days"] == 0 and old.date() in days and today not in days
    assert (
        await partition_of(pool, "workflow_runs", "id", expired) == f"workflow_runs_p{old:%Y%m%d}"
    )
    assert deleted["runs"] == 1  # the rest of the pass ran: the DEFAULT partition's run went
    # visible where operators look: both changes were deferred once
    assert {k: deferred(k) - before[k] for k in before} == {
        "create": 1,
        "drop": 1,
    }

    deleted = await pass_.run_once()
    assert deleted["days"] == 1 and deleted["runs"] == 1
    days = await engine.repo.partition_days()
    assert old.date() not in days and today in days


async def test_a_shorter_tenant_retention_deletes_rows_inside_partitions(
    engine: Replica, tenant: str, pool: asyncpg.Pool
) -> None:
    await engine.register(tenant, WORKFLOW)
    other = await engine.repo.ensure_tenant("tenant-b")  # keeps the default 720 h
    await engine.register(other, WORKFLOW)
    await pool.execute("UPDATE tenants SET retention_hours = 24 WHERE id = $1", tenant)
    day = midday(3)
    await engine.repo.ensure_partitions(first_day=day.date(), days=1)
    short = await add_run(pool, tenant=tenant, at=day, finished_at=day)
    kept = await add_run(pool, tenant=other, at=day, finished_at=day)
    deleted = await Retention(repo=engine.repo, default_hours=720, interval_seconds=3600).run_once()
    assert deleted["runs"] == 1 and deleted["days"] == 0  # the day stays for tenant-b's run
    left = {str(r["id"]) for r in await pool.fetch("SELECT id FROM workflow_runs")}
    assert left == {kept}
    assert await count(pool, "SELECT count(*) FROM task_events WHERE task_id = $1", short) == 0


async def test_an_event_inside_a_longer_retention_keeps_its_day(
    engine: Replica, tenant: str, pool: asyncpg.Pool
) -> None:
    """The day's only run is past its tenant's retention, but another tenant's event in the
    same day is not: the day stays, and the short-retention tenant's rows go one by one."""
    await engine.register(tenant, WORKFLOW)
    other = await engine.repo.ensure_tenant("tenant-b")  # keeps the default 720 h
    await pool.execute("UPDATE tenants SET retention_hours = 24 WHERE id = $1", tenant)
    day = midday(3)
    await engine.repo.ensure_partitions(first_day=day.date(), days=1)
    await add_run(pool, tenant=tenant, at=day, finished_at=day)
    await add_event(pool, tenant=tenant, at=day)
    kept = await add_event(pool, tenant=other, at=day)
    deleted = await Retention(repo=engine.repo, default_hours=720, interval_seconds=3600).run_once()
    assert deleted["days"] == 0 and deleted["runs"] == 1 and deleted["events"] == 1
    assert day.date() in await engine.repo.partition_days()
    assert {str(r["id"]) for r in await pool.fetch("SELECT id FROM events")} == {kept}


async def test_deleting_a_run_deletes_its_tasks_and_their_rows(
    engine: Replica, tenant: str, pool: asyncpg.Pool
) -> None:
    await ensure_partitions(engine.repo)
    await engine.register(tenant, WORKFLOW)
    run_id = await add_run(pool, tenant=tenant, at=datetime.now(UTC), finished_at=None)
    await pool.execute(
        "INSERT INTO queue_items (tenant_id, task_id, action_id, retry_count,"
        " schedule_timeout_at) VALUES ($1, $2, 'kept:run', 0, now())",
        tenant,
        run_id,
    )
    await pool.execute("DELETE FROM workflow_runs WHERE id = $1", run_id)
    for table in ("tasks", "task_events", "log_lines", "queue_items"):
        column = "id" if table == "tasks" else "task_id"
        assert (
            await count(pool, f"SELECT count(*) FROM {table} WHERE {column} = $1", run_id) == 0
        ), table


async def test_partition_bounds_agree_with_sql(pool: asyncpg.Pool) -> None:
    day = date(2026, 12, 5)
    lower, upper = day_bounds(day)
    sql_lower = await pool.fetchval("SELECT hewer_uuid_floor('2026-12-05 00:00:00+00')")
    sql_upper = await pool.fetchval("SELECT hewer_uuid_floor('2026-12-06 00:00:00+00')")
    assert (str(sql_lower), str(sql_upper)) == (lower, upper)


async def test_an_existing_database_keeps_its_rows_through_the_migration(
    empty_database: Callable[[], Awaitable[str]],
) -> None:
    """Migrations up to 0015, rows with random ids, then 0016: the rows move to DEFAULT,
    event numbering continues, and deleting a run still takes its dependents."""
    dsn = await empty_database()
    conn = await asyncpg.connect(dsn)
    try:
        await apply_migrations(dsn, before=16)
        tenant, workflow, version_id, step, run, task = (str(uuid.uuid4()) for _ in range(6))
        await conn.execute("INSERT INTO tenants (id, name) VALUES ($1, 'old')", tenant)
        await conn.execute(
            "INSERT INTO workflows (id, tenant_id, name) VALUES ($1, $2, 'wf')", workflow, tenant
        )
        await conn.execute(
            "INSERT INTO workflow_versions (id, tenant_id, workflow_id, ordinal, checksum,"
            " definition) VALUES ($1, $2, $3, 1, 'x', '{}')",
            version_id, tenant, workflow,
        )  # fmt: skip
        await conn.execute(
            "INSERT INTO steps (id, tenant_id, workflow_version_id, readable_id, action_id,"
            " position, timeout_seconds, schedule_timeout_seconds)"
            " VALUES ($1, $2, $3, 'a', 'wf:a', 0, 60, 300)",
            step, tenant, version_id,
        )  # fmt: skip
        await conn.execute(
            "INSERT INTO workflow_runs (id, tenant_id, workflow_id, workflow_version_id, status)"
            " VALUES ($1, $2, $3, $4, 'RUNNING')",
            run, tenant, workflow, version_id,
        )  # fmt: skip
        await conn.execute(
            "INSERT INTO tasks (id, tenant_id, workflow_run_id, step_id, readable_id, action_id,"
            " status) VALUES ($1, $2, $3, $4, 'a', 'wf:a', 'RUNNING')",
            task, tenant, run, step,
        )  # fmt: skip
        for kind in ("QUEUED", "STARTED"):
            await conn.execute(
                "INSERT INTO task_events (tenant_id, task_id, workflow_run_id, retry_count,"
                " event_type) VALUES ($1, $2, $3, 0, $4)",
                tenant, task, run, kind,
            )  # fmt: skip
        await conn.execute(
            "INSERT INTO log_lines (tenant_id, task_id, message) VALUES ($1, $2, 'hi')",
            tenant, task,
        )  # fmt: skip

        assert (await apply_migrations(dsn))[0] == "0016_partitioned_history"

        where = await conn.fetchval(
            "SELECT tableoid::regclass::text FROM tasks WHERE id = $1", task
        )
        assert where == "tasks_default"
        events = await conn.fetch("SELECT id, event_type FROM task_events ORDER BY id")
        assert [e["event_type"] for e in events] == ["QUEUED", "STARTED"]
        await conn.execute(
            "INSERT INTO task_events (tenant_id, task_id, workflow_run_id, retry_count,"
            " event_type) VALUES ($1, $2, $3, 0, 'COMPLETED')",
            tenant, task, run,
        )  # fmt: skip
        assert await conn.fetchval("SELECT max(id) FROM task_events") == events[-1]["id"] + 1
        assert datetime.now(UTC).date() in [
            r["day"]
            for r in await conn.fetch("SELECT hewer_ensure_partitions(current_date, 1) AS day")
        ]
        await conn.execute("DELETE FROM workflow_runs WHERE id = $1", run)
        for table in ("tasks", "task_events", "log_lines"):
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    finally:
        await conn.close()


async def test_existing_events_move_to_their_days_through_the_migration(
    empty_database: Callable[[], Awaitable[str]],
) -> None:
    """A database at 0018 with events: 0019 puts each into its day's partition where the day
    has partitions, the rest (random ids, days without partitions) into DEFAULT, and a day
    whose events sit in DEFAULT gets no partitions for any table."""
    dsn = await empty_database()
    conn = await asyncpg.connect(dsn)
    try:
        await apply_migrations(dsn, before=19)
        tenant = str(uuid.uuid4())
        await conn.execute("INSERT INTO tenants (id, name) VALUES ($1, 'old')", tenant)
        today = datetime.now(UTC).date()
        await conn.execute("SELECT hewer_ensure_partitions($1::date, 1)", today)
        random_id = str(uuid.uuid4())
        await conn.execute(
            "INSERT INTO events (id, tenant_id, key) VALUES ($1, $2, 'old:random')",
            random_id,
            tenant,
        )
        todays = await add_event(conn, tenant=tenant, at=midday(0))
        ahead = midday(-5)  # a day without partitions yet
        early = await add_event(conn, tenant=tenant, at=ahead)

        assert (await apply_migrations(dsn))[0] == "0019_partitioned_events"

        assert await partition_of(conn, "events", "id", todays) == f"events_p{today:%Y%m%d}"
        assert await partition_of(conn, "events", "id", random_id) == "events_default"
        assert await partition_of(conn, "events", "id", early) == "events_default"
        assert await conn.fetchval("SELECT count(*) FROM events") == 3
        created = [
            r["day"]
            for r in await conn.fetch(
                "SELECT hewer_ensure_partitions($1::date, 3) AS day", ahead.date() - timedelta(1)
            )
        ]
        assert created == [ahead.date() - timedelta(days=1), ahead.date() + timedelta(days=1)]
        assert await conn.fetchval("SELECT to_regclass($1)", f"events_p{ahead:%Y%m%d}") is None
        # the tenant's events still go with it
        await conn.execute("DELETE FROM tenants WHERE id = $1", tenant)
        assert await conn.fetchval("SELECT count(*) FROM events") == 0
    finally:
        await conn.close()
