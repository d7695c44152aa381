"""Crons, scheduled runs, workflow pause, rate limits, retention, table statistics and metric
reads.

Statements live in ``sql/queries/schedules.sql``; every read and change filters on the
tenant, except the engine-wide loops (due crons and schedules, retention, table statistics,
Prometheus).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg

from hewer.engine.db.base import Conn, Record, RepositoryBase
from hewer.engine.db.queries import query


class PartitionsBusy(Exception):
    """Day partitions could not be created or dropped now: other transactions held the
    tables longer than the change may wait (it holds up every statement queued behind it)."""


@dataclass(frozen=True, slots=True)
class DroppedDay:
    """What dropping a day's partitions removed."""

    runs: int
    events: int


@dataclass(frozen=True, slots=True)
class Page:
    ids: list[str]
    total: int


def _page(rows: Sequence[Record]) -> Page:
    return Page(ids=[str(r["id"]) for r in rows], total=int(rows[0]["total"]) if rows else 0)


class ScheduleQueries(RepositoryBase):
    # -- crons --------------------------------------------------------------------------------

    async def sync_code_crons(
        self,
        *,
        tenant_id: str,
        workflow_id: str,
        expressions: Sequence[str],
        next_fire_at: Sequence[datetime],
        input: dict[str, Any],
        priority: int | None,
    ) -> None:
        """Make the workflow's code-defined crons exactly ``expressions``; API crons stay."""
        async with self.transaction() as conn:
            await conn.execute(query("delete_stale_code_crons"), workflow_id, list(expressions))
            if expressions:
                await conn.execute(
                    query("upsert_code_crons"),
                    tenant_id,
                    workflow_id,
                    input,
                    priority,
                    list(expressions),
                    list(next_fire_at),
                )

    async def insert_api_cron(
        self,
        *,
        tenant_id: str,
        workflow_id: str,
        name: str,
        expression: str,
        input: dict[str, Any],
        metadata: dict[str, Any],
        priority: int | None,
        next_fire_at: datetime,
    ) -> str | None:
        value = await self.pool.fetchval(
            query("insert_api_cron"),
            tenant_id,
            workflow_id,
            name,
            expression,
            input,
            metadata,
            priority,
            next_fire_at,
        )
        return None if value is None else str(value)

    async def get_crons(self, tenant_id: str, ids: Sequence[str]) -> list[Record]:
        return list(await self.pool.fetch(query("get_cron"), tenant_id, list(ids)))

    async def page_crons(
        self,
        tenant_id: str,
        *,
        workflow_id: str | None,
        workflow_name: str | None,
        cron_name: str | None,
        metadata: dict[str, str] | None,
        order_by: str,
        direction: str,
        offset: int,
        limit: int,
    ) -> Page:
        rows = await self.pool.fetch(
            query("page_crons"),
            tenant_id,
            workflow_id,
            workflow_name,
            cron_name,
            metadata,
            order_by,
            direction,
            offset,
            limit,
        )
        return _page(rows)

    async def delete_cron(self, *, tenant_id: str, cron_id: str) -> bool:
        return await self.pool.fetchval(query("delete_cron"), cron_id, tenant_id) is not None

    async def set_cron_enabled(
        self, *, tenant_id: str, cron_id: str, enabled: bool, next_fire_at: datetime
    ) -> bool:
        value = await self.pool.fetchval(
            query("set_cron_enabled"), cron_id, tenant_id, enabled, next_fire_at
        )
        return value is not None

    async def claim_due_crons(self, conn: Conn, *, limit: int) -> list[Record]:
        return list(await conn.fetch(query("claim_due_crons"), limit))

    async def advance_cron(
        self, conn: Conn, *, cron_id: str, next_fire_at: datetime, fired: bool
    ) -> None:
        await conn.execute(query("advance_cron"), cron_id, next_fire_at, fired)

    # -- scheduled runs -------------------------------------------------------------------

    async def insert_scheduled_runs(
        self,
        *,
        tenant_id: str,
        workflow_id: str,
        ids: Sequence[str],
        trigger_at: Sequence[datetime],
        input: dict[str, Any],
        metadata: dict[str, Any],
        priority: int | None,
        parent_task_id: str | None = None,
    ) -> None:
        await self.pool.execute(
            query("insert_scheduled_runs"),
            tenant_id,
            workflow_id,
            input,
            metadata,
            priority,
            parent_task_id,
            list(ids),
            list(trigger_at),
        )

    async def get_scheduled(self, tenant_id: str, ids: Sequence[str]) -> list[Record]:
        return list(await self.pool.fetch(query("get_scheduled"), tenant_id, list(ids)))

    async def page_scheduled(
        self,
        tenant_id: str,
        *,
        workflow_id: str | None,
        parent_task_id: str | None,
        metadata: dict[str, str] | None,
        statuses: Sequence[str] | None,
        order_by: str,
        direction: str,
        offset: int,
        limit: int,
    ) -> Page:
        rows = await self.pool.fetch(
            query("page_scheduled"),
            tenant_id,
            workflow_id,
            parent_task_id,
            metadata,
            None if statuses is None else list(statuses),
            order_by,
            direction,
            offset,
            limit,
        )
        return _page(rows)

    async def scheduled_state(self, *, tenant_id: str, scheduled_id: str) -> Record | None:
        return await self.pool.fetchrow(query("scheduled_state"), scheduled_id, tenant_id)

    async def reschedule(self, *, tenant_id: str, scheduled_id: str, trigger_at: datetime) -> bool:
        value = await self.pool.fetchval(query("reschedule"), scheduled_id, tenant_id, trigger_at)
        return value is not None

    async def delete_scheduled(self, *, tenant_id: str, ids: Sequence[str]) -> list[str]:
        rows = await self.pool.fetch(query("delete_scheduled"), tenant_id, list(ids))
        return [str(r["id"]) for r in rows]

    async def claim_due_schedules(self, conn: Conn, *, limit: int) -> list[Record]:
        return list(await conn.fetch(query("claim_due_schedules"), limit))

    async def mark_schedule_fired(
        self, conn: Conn, *, scheduled_id: str, status: str, run_id: str | None
    ) -> None:
        await conn.execute(query("mark_schedule_fired"), scheduled_id, status, run_id)

    async def seconds_to_next_due(self) -> float | None:
        value = await self.pool.fetchval(query("seconds_to_next_due"))
        return None if value is None else float(value)

    async def expired_paused_items(self, *, limit: int) -> list[Record]:
        return list(await self.pool.fetch(query("expired_paused_items"), limit))

    # -- workflow pause and delete ----------------------------------------------------------

    async def pause_workflow(
        self,
        *,
        tenant_id: str,
        workflow_id: str,
        queue_ttl_seconds: float,
        cron_behavior: str,
        scheduled_behavior: str,
    ) -> bool:
        """Pause and set aside the workflow's queued items; False if there is no such workflow."""
        async with self.transaction() as conn:
            if (
                await conn.fetchval(query("lock_workflow_for_pause"), workflow_id, tenant_id)
                is None
            ):
                return False
            await conn.execute(
                query("pause_workflow"),
                workflow_id,
                tenant_id,
                queue_ttl_seconds,
                cron_behavior,
                scheduled_behavior,
            )
            await conn.execute(query("set_aside_workflow_items"), workflow_id, queue_ttl_seconds)
            return True

    async def unpause_workflow(self, conn: Conn, *, tenant_id: str, workflow_id: str) -> int | None:
        """Unpause and restore its items; the number restored, None if no such workflow."""
        if await conn.fetchval(query("lock_workflow_for_pause"), workflow_id, tenant_id) is None:
            return None
        await conn.execute(query("unpause_workflow"), workflow_id, tenant_id)
        return len(await conn.fetch(query("restore_workflow_items"), workflow_id))

    async def delete_workflow(self, *, tenant_id: str, workflow_id: str) -> bool:
        value = await self.pool.fetchval(query("delete_workflow"), workflow_id, tenant_id, None)
        return value is not None

    # -- rate limits ----------------------------------------------------------------------

    async def upsert_rate_limit(
        self, *, tenant_id: str, key: str, limit: int, duration: str
    ) -> None:
        await self.pool.execute(query("upsert_rate_limit"), tenant_id, key, limit, duration)

    async def delete_rate_limit(self, *, tenant_id: str, key: str) -> bool:
        return await self.pool.fetchval(query("delete_rate_limit"), tenant_id, key) is not None

    async def page_rate_limits(
        self,
        tenant_id: str,
        *,
        search: str | None,
        order_by: str,
        direction: str,
        offset: int,
        limit: int,
    ) -> list[Record]:
        return list(
            await self.pool.fetch(
                query("page_rate_limits"), tenant_id, search, order_by, direction, offset, limit
            )
        )

    # -- retention ------------------------------------------------------------------------

    async def tenant_retention(self, default_hours: int) -> list[Record]:
        return list(await self.pool.fetch(query("tenant_retention"), default_hours))

    async def delete_old(
        self,
        what: str,
        *,
        tenant_id: str,
        cutoff: datetime,
        limit: int,
        spare_from: str | None = None,
    ) -> int:
        """One batch of ``what`` older than ``cutoff``; for runs and events, those in day
        partitions with ids from ``spare_from`` on are left for their day's drop."""
        name = {
            "runs": "delete_old_runs",
            "events": "delete_old_events",
            "scheduled": "delete_old_scheduled",
            "workflows": "purge_deleted_workflows",
            "spans": "delete_old_spans",
        }[what]
        args: tuple[Any, ...] = (tenant_id, cutoff, limit)
        if what in ("runs", "events"):
            args += (spare_from,)
        return len(await self.pool.fetch(query(name), *args))

    async def ensure_partitions(
        self, *, first_day: date, days: int, lock_wait: timedelta | None = None
    ) -> list[date]:
        """Create the missing day partitions of runs, tasks, task events and events; the days
        created. With ``lock_wait``, raises :class:`PartitionsBusy` when the parent tables'
        locks were not granted within it (nothing created)."""
        try:
            rows = await self.pool.fetch(query("ensure_partitions"), first_day, days, lock_wait)
        except asyncpg.LockNotAvailableError as exc:
            raise PartitionsBusy(f"the tables stayed locked: {exc}") from exc
        return [r["day"] for r in rows]

    async def partition_days(self) -> list[date]:
        return [r["day"] for r in await self.pool.fetch(query("partition_days"))]

    async def analyze_grown_tables(self, *, min_rows: int, growth: float) -> list[str]:
        """Analyze the engine's tables holding at least ``min_rows`` rows and ``growth`` times
        as many as their statistics describe; their names (migration 0023)."""
        rows = await self.pool.fetch(query("analyze_grown_tables"), min_rows, growth)
        return [str(r["name"]) for r in rows]

    async def drop_day_partitions(
        self, *, day: date, cutoffs: dict[str, datetime], lock_wait: timedelta
    ) -> DroppedDay | None:
        """Drop ``day``'s partitions if every run in them finished, and every run and event
        is older than its tenant's cutoff; what was dropped, or None when the day must stay.

        Raises :class:`PartitionsBusy` when the parent tables' locks were not granted within
        ``lock_wait`` (nothing changed)."""
        try:
            row = await self.pool.fetchrow(
                query("drop_day_partitions"),
                day,
                list(cutoffs),
                list(cutoffs.values()),
                lock_wait,
            )
        except asyncpg.LockNotAvailableError as exc:
            raise PartitionsBusy(f"the tables stayed locked: {exc}") from exc
        if row is None or row["runs"] is None or row["runs"] < 0:
            return None
        return DroppedDay(runs=int(row["runs"]), events=int(row["events"]))

    async def try_advisory_lock(self, conn: Conn, key: int) -> bool:
        return bool(await conn.fetchval(query("try_advisory_lock"), key))

    async def advisory_unlock(self, conn: Conn, key: int) -> None:
        await conn.fetchval(query("advisory_unlock"), key)

    # -- metrics --------------------------------------------------------------------------

    async def task_status_counts(
        self,
        tenant_id: str,
        *,
        since: datetime,
        until: datetime | None,
        workflow_ids: Sequence[str] | None,
        parent_task_id: str | None,
        triggering_event_id: str | None,
    ) -> dict[str, int]:
        rows = await self.pool.fetch(
            query("task_status_counts"),
            tenant_id,
            since,
            until,
            None if workflow_ids is None else list(workflow_ids),
            parent_task_id,
            triggering_event_id,
        )
        return {r["status"]: int(r["n"]) for r in rows}

    async def queue_depths(self) -> list[Record]:
        return list(await self.pool.fetch(query("queue_depths")))

    async def workflow_queue_metrics(self, tenant_id: str) -> list[Record]:
        return list(await self.pool.fetch(query("workflow_queue_metrics"), tenant_id))

    async def worker_slot_totals(self) -> list[Record]:
        return list(await self.pool.fetch(query("worker_slot_totals")))
