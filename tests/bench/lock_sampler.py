"""Lock waits in PostgreSQL, sampled from pg_stat_activity / pg_locks (benchmark helper).

Every 0.5 s, backends with ``wait_event_type = 'Lock'`` are recorded per (backend, statement
start), with the tables PostgreSQL names for the wait (a not-granted relation lock, or the
tuple lock a row waiter holds; a wait on another transaction's id names none) and the
longest wait seen (time since the backend's state last changed).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import dataclass
from typing import Any

import asyncpg

LOCK_SAMPLE_EVERY = 0.5


@dataclass
class LockWait:
    table: str
    query: str
    longest: float = 0.0


class LockSampler:
    """Backends waiting on a heavyweight lock, every 0.5 s, by (pid, statement start)."""

    SQL = """
        SELECT a.pid, a.query_start, left(a.query, 90) AS query,
               extract(epoch FROM now() - coalesce(a.state_change, a.query_start))::float8
                   AS waited,
               (SELECT string_agg(DISTINCT l.relation::regclass::text, ',')
                FROM pg_locks l
                WHERE l.pid = a.pid AND l.relation IS NOT NULL
                  AND (NOT l.granted OR l.locktype = 'tuple')) AS tables
        FROM pg_stat_activity a
        WHERE a.wait_event_type = 'Lock' AND a.pid <> pg_backend_pid()
    """

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self.waits: dict[tuple[int, Any], LockWait] = {}
        self.samples = 0
        self.backend_pid = 0
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._conn = await asyncpg.connect(self._dsn)
        self.backend_pid = self._conn.get_server_pid()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._conn is not None
        while True:
            for r in await self._conn.fetch(self.SQL):
                key = (r["pid"], r["query_start"])
                tables = r["tables"] or "(transaction id: table not named)"
                wait = self.waits.setdefault(key, LockWait(tables, r["query"] or ""))
                wait.longest = max(wait.longest, r["waited"] or 0.0)
            self.samples += 1
            await asyncio.sleep(LOCK_SAMPLE_EVERY)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            await self._conn.close()

    def summary(self) -> list[str]:
        by_table: dict[str, list[LockWait]] = collections.defaultdict(list)
        for w in self.waits.values():
            by_table[w.table].append(w)
        if not by_table:
            return [f"lock waits: none in {self.samples} samples"]
        lines = [f"lock waits in {self.samples} samples:"]
        for table, ws in sorted(by_table.items()):
            worst = max(ws, key=lambda w: w.longest)
            lines.append(
                f"  {table}: {len(ws)} waits, longest {1000 * worst.longest:.0f} ms "
                f"({worst.query!r})"
            )
        return lines

    def waits_on(self, table: str) -> int:
        return sum(1 for w in self.waits.values() if table in w.table.split(","))
