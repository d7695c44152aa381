"""Does stored history slow the queue? Queue figures with an empty history and with N finished
tasks loaded, and the time retention takes to remove one day of them.

A script, not a test (pytest does not collect tests/bench). It starts a fresh ``hewer dev``,
runs the lean protocol-level worker from ``bench.py`` and measures, before and after loading
history: unloaded trigger→result p50 of a single task and of a sequential 3-task DAG, and
lean-worker throughput. History is written straight into the engine's tables in the shape the
engine itself leaves behind for a finished no-op run (one run, one task, QUEUED + STARTED +
COMPLETED task events, ids stamped with their time as core/ids.py does) with
``--events-per-run`` pushed events (default 1), spread evenly over ``--days`` whole UTC days
that end at today's midnight, each day in its own partitions. Retention is the engine's own
pass (``services/retention.py``) with its clock moved so that exactly the oldest day has
expired: it drops that day's partitions.

    .venv/bin/python tests/bench/history_bench.py                    # 2,000,000 tasks
    .venv/bin/python tests/bench/history_bench.py --history 200000   # quicker look
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench
from hewer.engine.db.base import create_pool
from hewer.engine.db.repository import Repository
from hewer.engine.services.retention import Retention

LOAD_CHUNK = 100_000
# a version-7 id stamped with the row's time `at`, as core/ids.py makes them (it decides the
# day partition)
V7_ID = """(substr(replace(hewer_uuid_floor(at)::text, '-', ''), 1, 12) || '7'
            || substr(md5(random()::text), 1, 3) || '8'
            || substr(md5(random()::text), 1, 15))::uuid"""

# One statement per chunk: a finished no-op run as the engine leaves it (the single task of a
# one-step workflow shares the run's id, as services/triggers.py does).
LOAD_SQL = f"""
WITH spec AS (
    SELECT w.id AS workflow_id, v.id AS version_id, s.id AS step_id, s.readable_id,
           s.action_id, w.tenant_id
    FROM workflows w
    JOIN workflow_versions v ON v.workflow_id = w.id
    JOIN steps s ON s.workflow_version_id = v.id
    WHERE w.name = $1 AND w.deleted_at IS NULL
    ORDER BY v.created_at DESC LIMIT 1
), rows AS (
    SELECT ($2::timestamptz + (g - 1) * $3::interval) AS at
    FROM generate_series(1, $4::int) g
), ided AS (
    SELECT {V7_ID} AS id, at
    FROM rows
), run_rows AS (
    INSERT INTO workflow_runs (id, tenant_id, workflow_id, workflow_version_id, status,
                               created_at, started_at, finished_at)
    SELECT r.id, spec.tenant_id, spec.workflow_id, spec.version_id, 'COMPLETED',
           r.at, r.at + interval '2 ms', r.at + interval '3 ms'
    FROM ided r, spec
    RETURNING id, tenant_id, created_at
), task_rows AS (
    INSERT INTO tasks (id, tenant_id, workflow_run_id, step_id, readable_id, action_id, status,
                       output, created_at, queued_at, assigned_at, started_at, finished_at)
    SELECT rr.id, rr.tenant_id, rr.id, spec.step_id, spec.readable_id, spec.action_id,
           'COMPLETED', '{{}}', rr.created_at, rr.created_at, rr.created_at + interval '1 ms',
           rr.created_at + interval '2 ms', rr.created_at + interval '3 ms'
    FROM run_rows rr, spec
    RETURNING id, tenant_id, created_at
)
INSERT INTO task_events (tenant_id, task_id, workflow_run_id, retry_count, event_type, output,
                         created_at)
SELECT t.tenant_id, t.id, t.id, 0, e.kind, e.output, t.created_at + e.offset_ms
FROM task_rows t
CROSS JOIN (VALUES ('QUEUED', NULL, interval '0 ms'),
                   ('STARTED', NULL, interval '2 ms'),
                   ('COMPLETED', '{{}}', interval '3 ms')) AS e(kind, output, offset_ms)
"""
# events pushed to the engine, evenly spread like the runs
EVENTS_SQL = f"""
INSERT INTO events (id, tenant_id, key, payload, created_at)
SELECT {V7_ID}, (SELECT tenant_id FROM workflows WHERE name = $1 AND deleted_at IS NULL),
       'bench:history', '{{"n": 1}}', at
FROM (SELECT $2::timestamptz + (g - 1) * $3::interval AS at
      FROM generate_series(1, $4::int) g) AS rows
"""


async def measure(load: bench.Load, lean: bench.Proc, tasks: int, seq: int) -> dict[str, float]:
    """Unloaded p50 of a task and of a 3-task DAG, then lean-worker throughput."""
    single = await load.sequential(bench.NOOP_WORKFLOW, seq)
    dag = await load.sequential(bench.DAG_WORKFLOW, max(1, seq // 4))
    await load.bulk(bench.NOOP_WORKFLOW, min(500, tasks), 500, 1000, 60)  # warm-up
    bulk = await load.bulk(bench.NOOP_WORKFLOW, tasks, 500, 1000, 180)
    if bulk.done < bulk.n:
        raise RuntimeError(f"lean phase incomplete: {bulk.done}/{bulk.n}")
    return {"task_p50_ms": single.pct(50), "dag_p50_ms": dag.pct(50), "tasks_per_s": bulk.rate}


async def load_history(
    conn: asyncpg.Connection, *, total: int, days: int, events_per_run: int
) -> tuple[datetime, float]:
    """Writes ``total`` finished runs and ``events_per_run`` events for each over ``days``
    days ending at today's midnight (UTC); returns the start of the oldest day and the
    seconds it took."""
    # whole UTC days, so that the oldest day is one partition
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=days)
    step = (end - start) / total
    t0 = time.perf_counter()
    await conn.execute("SELECT hewer_ensure_partitions($1::date, $2::int)", start.date(), days)
    written = 0
    while written < total:
        n = min(LOAD_CHUNK, total - written)
        await conn.execute(LOAD_SQL, bench.NOOP_WORKFLOW, start + written * step, step, n)
        if events_per_run:
            await conn.execute(
                EVENTS_SQL,
                bench.NOOP_WORKFLOW,
                start + written * step,
                step / events_per_run,
                n * events_per_run,
            )
        written += n
        print(f"  history: {written:,} finished tasks written", flush=True)
    await conn.execute("ANALYZE workflow_runs; ANALYZE tasks; ANALYZE task_events; ANALYZE events")
    return start, time.perf_counter() - t0


async def table_sizes(conn: asyncpg.Connection) -> str:
    sizes = []
    for table in ("task_events", "tasks", "workflow_runs", "events"):  # all partitions of each
        size = await conn.fetchval(
            "SELECT coalesce(sum(pg_total_relation_size(relid)),"
            " pg_total_relation_size($1::regclass)) FROM pg_partition_tree($1::regclass)",
            table,
        )
        sizes.append(f"{table} {size / 2**20:,.0f} MB")
    return ", ".join(sizes)


async def run(args: argparse.Namespace, h: bench.Harness) -> int:
    dev = await bench.start_dev_engine(h, env=bench.child_env() | {"HEWER_LOG_LEVEL": "WARNING"})
    client_env, dsn, host = dev.client_env, dev.dsn, dev.host
    lean = h.spawn(
        "lean-worker",
        [
            sys.executable,
            bench.SCRIPT,
            "--role",
            "lean-worker",
            "--host",
            host,
            "--slots",
            "500",
            "--senders",
            "32",
        ],
        env=bench.child_env() | client_env,
        stdout_pipe=True,
    )
    await asyncio.to_thread(bench.read_ready, lean, 60)
    load = bench.Load(host, client_env["HATCHET_CLIENT_TOKEN"], 1)
    await load.start()
    conn = await asyncpg.connect(dsn)
    figures: dict[str, list[dict[str, float]]] = {"empty": [], "loaded": []}
    try:
        await load.warmup(bench.NOOP_WORKFLOW, lean)
        await load.warmup(bench.DAG_WORKFLOW, lean)
        for _ in range(args.rounds):
            figures["empty"].append(await measure(load, lean, args.tasks, args.seq))
            print(f"  empty history: {figures['empty'][-1]}", flush=True)
        oldest, took = await load_history(
            conn, total=args.history, days=args.days, events_per_run=args.events_per_run
        )
        print(f"loaded {args.history:,} finished tasks in {took:.0f} s ({await table_sizes(conn)})")
        for _ in range(args.rounds):
            figures["loaded"].append(await measure(load, lean, args.tasks, args.seq))
            print(f"  {args.history:,} finished: {figures['loaded'][-1]}", flush=True)
        day_removed = await retention_of_one_day(dsn, oldest=oldest)
    finally:
        await conn.close()
        await load.close()
    print_table(figures, history=args.history)
    runs, events, seconds = day_removed
    print(
        f"retention of the oldest day: {runs:,} runs (+ tasks, task events) and {events:,}"
        f" events in {seconds:.1f} s"
    )
    return 0


async def retention_of_one_day(dsn: str, *, oldest: datetime) -> tuple[int, int, float]:
    """The engine's retention pass with the default 720 h, its clock set so that the runs and
    events of the oldest day (and only those) are past the cutoff; (runs, events, seconds)."""
    pool = await create_pool(dsn, size=2)
    repo = Repository(pool, observer=_NoObserver())
    try:
        retention = Retention(repo=repo, default_hours=720, interval_seconds=3600)
        now = oldest + timedelta(days=1) + timedelta(hours=720)
        t0 = time.perf_counter()
        deleted = await retention.run_once(now=now)
        return deleted.get("runs", 0), deleted.get("events", 0), time.perf_counter() - t0
    finally:
        await pool.close()


class _NoObserver:
    """Retention writes nothing the engine's wake-ups would care about."""

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None


def print_table(figures: dict[str, list[dict[str, float]]], *, history: int) -> None:
    print(f"\n{'':<24}{'empty history':>22}{f'{history:,} finished':>22}")
    for key, label in (
        ("task_p50_ms", "task p50 (ms)"),
        ("dag_p50_ms", "3-task DAG p50 (ms)"),
        ("tasks_per_s", "lean tasks/s"),
    ):
        cells = []
        for phase in ("empty", "loaded"):
            xs = [f[key] for f in figures[phase]]
            cells.append(f"{statistics.median(xs):.1f} ({min(xs):.1f}-{max(xs):.1f})")
        print(f"{label:<24}{cells[0]:>22}{cells[1]:>22}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--history", type=int, default=2_000_000, help="finished tasks to load")
    p.add_argument("--days", type=int, default=10, help="days the history is spread over")
    p.add_argument("--events-per-run", type=int, default=1, help="pushed events stored per run")
    p.add_argument("--tasks", type=int, default=10_000, help="runs in each lean throughput phase")
    p.add_argument("--seq", type=int, default=200, help="sequential runs for the task p50")
    p.add_argument("--rounds", type=int, default=3, help="measurements before and after loading")
    args = p.parse_args()
    h = bench.Harness(Path(tempfile.mkdtemp(prefix="hewer-history-", dir="/tmp")))
    try:
        return asyncio.run(run(args, h))
    finally:
        h.cleanup()


if __name__ == "__main__":
    sys.exit(main())
