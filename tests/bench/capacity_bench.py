"""What the scheduler's capacity read costs with many workers and many day partitions.

A script, not a test. Every scheduling round reads, for each worker this replica holds, the
slot units its running tasks hold (``hewer_local_worker_capacity``, services/scheduler.py).
``tasks`` is partitioned by day (migration 0016) and a worker's held tasks cannot be found
by partition key, so the cost may grow with workers x partitions. This script builds that
state in a fresh embedded PostgreSQL (the migrations, ``--days`` day partitions, ``--workers``
workers of one tenant, ``--held`` running tasks spread over them and ``--finished`` finished
tasks in today's partition, ``--gone`` workers that have left) and times the call, median of
``--calls`` after a warm-up, on one connection.

    .venv/bin/python tests/bench/capacity_bench.py                          # 500 workers, 33 days
    .venv/bin/python tests/bench/capacity_bench.py --workers 50 --days 4
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from hewer.engine.core.ids import new_run_id
from hewer.engine.db.embedded import EmbeddedPostgres
from hewer.engine.db.migrate import apply_migrations
from hewer.engine.db.queries import query


async def prepare(
    dsn: str, *, workers: int, days: int, held: int, finished: int, gone: int, analyze: bool
) -> list[str]:
    await apply_migrations(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        today = datetime.now(UTC).date()
        await conn.fetch(
            "SELECT hewer_ensure_partitions($1::date, $2)", today - timedelta(days=days - 3), days
        )
        tenant = str(uuid.uuid4())
        await conn.execute("INSERT INTO tenants (id, name) VALUES ($1, 'bench')", tenant)
        workflow = await conn.fetchval(
            "INSERT INTO workflows (tenant_id, name) VALUES ($1, 'cap') RETURNING id", tenant
        )
        version = await conn.fetchval(
            "INSERT INTO workflow_versions (tenant_id, workflow_id, ordinal, checksum, definition)"
            " VALUES ($1, $2, 1, 'x', '{}') RETURNING id",
            tenant,
            workflow,
        )
        step = await conn.fetchval(
            "INSERT INTO steps (id, tenant_id, workflow_version_id, readable_id, action_id,"
            " position, timeout_seconds, schedule_timeout_seconds)"
            " VALUES (gen_random_uuid(), $1, $2, 'run', 'cap:run', 0, 60, 300) RETURNING id",
            tenant,
            version,
        )
        ids = [str(uuid.uuid4()) for _ in range(workers)]
        await conn.execute(
            "INSERT INTO workers (id, tenant_id, name, actions, slot_config, engine_id,"
            " is_active, last_heartbeat_at)"
            " SELECT w, $2, 'w', '{cap:run}', '{\"default\": 10}', 'bench', true, now()"
            " FROM unnest($1::uuid[]) w",
            ids,
            tenant,
        )
        await conn.execute(
            "INSERT INTO workers (id, tenant_id, name, actions, engine_id, is_active,"
            " last_heartbeat_at) SELECT gen_random_uuid(), $1, 'gone', '{cap:run}', 'old',"
            " false, now() - interval '1 day' FROM generate_series(1, $2)",
            tenant,
            gone,
        )
        runs = [new_run_id() for _ in range(held + finished)]
        await conn.execute(
            "INSERT INTO workflow_runs (id, tenant_id, workflow_id, workflow_version_id, status)"
            " SELECT r, $2, $3, $4, 'RUNNING' FROM unnest($1::uuid[]) r",
            runs,
            tenant,
            workflow,
            version,
        )
        await conn.execute(
            "INSERT INTO tasks (id, tenant_id, workflow_run_id, step_id, readable_id, action_id,"
            " status, worker_id, slot_held)"
            " SELECT r, $2, r, $3, 'run', 'cap:run',"
            "        CASE WHEN n <= $6 THEN 'RUNNING' ELSE 'COMPLETED' END,"
            "        ($4::uuid[])[1 + n % $5], n <= $6"
            " FROM unnest($1::uuid[]) WITH ORDINALITY AS x(r, n)",
            runs,
            tenant,
            step,
            ids,
            len(ids),
            held,
        )
        if analyze:
            await conn.execute("ANALYZE")
        return ids
    finally:
        await conn.close()


async def measure(dsn: str, ids: list[str], *, calls: int) -> list[float]:
    conn = await asyncpg.connect(dsn)
    try:
        statement = await conn.prepare(query("local_worker_capacity"))
        for _ in range(20):
            await statement.fetch(ids, 30.0)
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            rows = await statement.fetch(ids, 30.0)
            times.append((time.perf_counter() - t0) * 1000)
        assert len(rows) == len(ids)
        return times
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="hewer-capacity-", dir="/tmp"))
    base.chmod(0o755)  # noqa: ASYNC240 (set-up, before anything is measured)
    pg = EmbeddedPostgres(data_dir=base / "pg")
    try:
        dsn = pg.start()
        ids = await prepare(
            dsn,
            workers=args.workers,
            days=args.days,
            held=args.held,
            finished=args.finished,
            gone=args.gone,
            analyze=not args.no_analyze,
        )
        times = await measure(dsn, ids, calls=args.calls)
        print(
            f"capacity read: {args.workers} workers, {args.days} day partitions (+ DEFAULT),"
            f" {args.held} held tasks, {args.finished} finished:"
            f" median {statistics.median(times):.2f} ms,"
            f" p90 {statistics.quantiles(times, n=10)[-1]:.2f} ms over {args.calls} calls"
        )
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workers", type=int, default=500)
    p.add_argument("--days", type=int, default=33, help="day partitions (30-day retention: 33)")
    p.add_argument("--held", type=int, default=1000, help="running tasks holding slots")
    p.add_argument("--finished", type=int, default=20_000, help="finished tasks of today")
    p.add_argument("--gone", type=int, default=2_000, help="inactive workers stored")
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--no-analyze", action="store_true", help="no statistics (a fresh partition)")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
