"""What the scheduler's capacity read costs with many workers and many day partitions.

A script, not a test. Every scheduling round reads, for the workers this replica holds that
serve an action with a ready item, the slot units their running tasks hold
(``hewer_worker_capacity``, migration 0022, services/scheduler.py). ``tasks`` is partitioned
by day (migration 0016) and a worker's held tasks cannot be found by partition key, so the
cost may grow with workers x partitions. This script builds that state in a fresh embedded
PostgreSQL (the migrations, ``--days`` day partitions, ``--workers`` workers of one tenant of
which ``--serving`` serve the action one ready item waits for, ``--held`` running tasks spread
over them and ``--finished`` finished tasks in today's partition, ``--gone`` workers that have
left) and times the call, median of ``--calls`` after a warm-up, on one connection; beside it
the read of every worker, whatever is queued, as the scheduler made it before migration 0022
(the same function without ``ready_only``).

    .venv/bin/python tests/bench/capacity_bench.py                          # 500 workers, 33 days
    .venv/bin/python tests/bench/capacity_bench.py --workers 50 --days 4
    .venv/bin/python tests/bench/capacity_bench.py --serving 50             # 50 of 500 serve
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
    dsn: str,
    *,
    workers: int,
    serving: int,
    days: int,
    held: int,
    finished: int,
    gone: int,
    analyze: bool,
) -> tuple[str, list[str]]:
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
            " SELECT w, $2, 'w', CASE WHEN n <= $3 THEN '{cap:run}'::text[]"
            "                         ELSE '{cap:idle}'::text[] END,"
            "        '{\"default\": 10}', 'bench', true, now()"
            " FROM unnest($1::uuid[]) WITH ORDINALITY AS x(w, n)",
            ids,
            tenant,
            serving,
        )
        await conn.execute(  # the one ready item, of the action the serving workers take
            "INSERT INTO queue_items (tenant_id, task_id, retry_count, action_id,"
            " schedule_timeout_at) VALUES ($1, $2, 0, 'cap:run', now() + interval '1 day')",
            tenant,
            new_run_id(),
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
        return tenant, ids
    finally:
        await conn.close()


async def measure(
    dsn: str, reads: dict[str, tuple[str, tuple[object, ...], int]], *, calls: int
) -> dict[str, list[float]]:
    """Milliseconds per call of each read (sql, arguments, workers it must return), the reads
    taking turns call by call so that the machine's drift falls on all of them alike."""
    conn = await asyncpg.connect(dsn)
    try:
        statements = {name: await conn.prepare(sql) for name, (sql, _, _) in reads.items()}
        for name, (_, args, rows) in reads.items():
            for _ in range(20):
                assert len(await statements[name].fetch(*args)) == rows
        times: dict[str, list[float]] = {name: [] for name in reads}
        for _ in range(calls):
            for name, (_, args, _) in reads.items():
                t0 = time.perf_counter()
                await statements[name].fetch(*args)
                times[name].append((time.perf_counter() - t0) * 1000)
        return times
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="hewer-capacity-", dir="/tmp"))
    base.chmod(0o755)  # noqa: ASYNC240 (set-up, before anything is measured)
    pg = EmbeddedPostgres(data_dir=base / "pg")
    try:
        dsn = pg.start()
        serving = args.workers if args.serving is None else args.serving
        tenant, ids = await prepare(
            dsn,
            workers=args.workers,
            serving=serving,
            days=args.days,
            held=args.held,
            finished=args.finished,
            gone=args.gone,
            analyze=not args.no_analyze,
        )
        print(
            f"capacity read: {args.workers} workers ({serving} serving the ready action),"
            f" {args.days} day partitions (+ DEFAULT), {args.held} held tasks,"
            f" {args.finished} finished; median / p90 over {args.calls} calls"
        )
        reads = {
            "serving workers (0022)": (
                query("worker_capacity"),
                (tenant, ids, ["cap:run", "cap:idle"], True, 30.0),
                serving,
            ),
            "every worker (before 0022)": (
                query("worker_capacity"),
                (tenant, ids, ["cap:run", "cap:idle"], False, 30.0),
                len(ids),
            ),
        }
        for name, times in (await measure(dsn, reads, calls=args.calls)).items():
            print(
                f"  {name:26} {statistics.median(times):6.2f} ms"
                f" {statistics.quantiles(times, n=10)[-1]:6.2f} ms"
            )
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workers", type=int, default=500)
    p.add_argument("--serving", type=int, help="workers serving the ready action (all)")
    p.add_argument("--days", type=int, default=33, help="day partitions (30-day retention: 33)")
    p.add_argument("--held", type=int, default=1000, help="running tasks holding slots")
    p.add_argument("--finished", type=int, default=20_000, help="finished tasks of today")
    p.add_argument("--gone", type=int, default=2_000, help="inactive workers stored")
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--no-analyze", action="store_true", help="no statistics (a fresh partition)")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
