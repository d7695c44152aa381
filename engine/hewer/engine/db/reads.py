"""Read-only queries behind the REST API, mixed into :class:`Repository`.

Each method is one named statement from ``sql/queries/reads.sql`` and filters on the tenant,
so a handler can never read another tenant's rows by guessing an id.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from hewer.engine.db.queries import query

Record = asyncpg.Record


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Filters shared by the run list, the task list and the bulk cancel/replay filter."""

    since: datetime
    until: datetime | None = None
    statuses: Sequence[str] | None = None
    workflow_ids: Sequence[str] | None = None
    # (key, value) pairs, compared as text; a key may repeat
    additional_metadata: Sequence[tuple[str, str]] | None = None
    # True: any pair matches (OR); False: all pairs must match (AND)
    metadata_any: bool = False
    worker_id: str | None = None
    parent_id: str | None = None
    triggering_event_id: str | None = None


@dataclass(frozen=True, slots=True)
class EventFilter:
    since: datetime | None = None
    until: datetime | None = None
    keys: Sequence[str] | None = None
    event_ids: Sequence[str] | None = None
    scopes: Sequence[str] | None = None
    additional_metadata: dict[str, str] | None = None
    workflow_ids: Sequence[str] | None = None
    run_statuses: Sequence[str] | None = None


@dataclass(frozen=True, slots=True)
class LogFilter:
    since: datetime | None = None
    until: datetime | None = None
    search: str | None = None
    levels: Sequence[str] | None = None
    retry_count: int | None = None
    oldest_first: bool = False
    limit: int = 1000


@dataclass(frozen=True, slots=True)
class Page:
    """One page of ids (in list order) and the number of matches of the whole listing."""

    total: int
    ids: list[str]


def _opt_list(values: Sequence[str] | None) -> list[str] | None:
    return None if values is None else list(values)


def _page(row: Record | None) -> Page:
    if row is None:
        return Page(total=0, ids=[])
    return Page(total=int(row["total"]), ids=[str(i) for i in row["ids"]])


class ReadQueries:
    pool: asyncpg.Pool

    # -- runs and tasks -------------------------------------------------------------------

    def _run_filter_args(self, tenant_id: str, f: RunFilter) -> list[Any]:
        pairs = f.additional_metadata or None
        return [
            tenant_id,
            f.since,
            f.until,
            _opt_list(f.statuses),
            _opt_list(f.workflow_ids),
            None if pairs is None else [k for k, _ in pairs],
            None if pairs is None else [v for _, v in pairs],
            f.metadata_any,
            f.worker_id,
            f.parent_id,
            f.triggering_event_id,
        ]

    async def rest_page_runs(
        self, tenant_id: str, f: RunFilter, *, offset: int, limit: int
    ) -> Page:
        args = self._run_filter_args(tenant_id, f)
        return _page(await self.pool.fetchrow(query("rest_page_runs"), *args, offset, limit))

    async def rest_page_tasks(
        self, tenant_id: str, f: RunFilter, *, offset: int, limit: int
    ) -> Page:
        args = self._run_filter_args(tenant_id, f)
        return _page(await self.pool.fetchrow(query("rest_page_tasks"), *args, offset, limit))

    async def rest_runs(self, tenant_id: str, run_ids: Sequence[str]) -> list[Record]:
        if not run_ids:
            return []
        return list(await self.pool.fetch(query("rest_runs_full"), tenant_id, list(run_ids)))

    async def rest_tasks(
        self,
        tenant_id: str,
        *,
        task_ids: Sequence[str] = (),
        run_ids: Sequence[str] = (),
    ) -> list[Record]:
        """Tasks by id or by run, oldest first (then by step position)."""
        if not task_ids and not run_ids:
            return []
        return list(
            await self.pool.fetch(
                query("rest_tasks_full"), tenant_id, list(task_ids), list(run_ids)
            )
        )

    async def rest_resolve_run(self, tenant_id: str, run_or_task_id: str) -> str | None:
        value = await self.pool.fetchval(query("rest_resolve_run"), tenant_id, run_or_task_id)
        return None if value is None else str(value)

    async def rest_run_task_events(self, tenant_id: str, run_id: str) -> list[Record]:
        return list(await self.pool.fetch(query("rest_run_task_events"), tenant_id, run_id))

    async def rest_version_steps(self, tenant_id: str, version_ids: Sequence[str]) -> list[Record]:
        if not version_ids:
            return []
        return list(
            await self.pool.fetch(query("rest_version_steps"), tenant_id, list(version_ids))
        )

    async def rest_task_logs(self, tenant_id: str, task_id: str, f: LogFilter) -> list[Record]:
        return list(
            await self.pool.fetch(
                query("rest_task_logs"),
                tenant_id,
                task_id,
                f.since,
                f.until,
                f.search or None,
                _opt_list(f.levels),
                f.retry_count,
                f.oldest_first,
                f.limit,
            )
        )

    # -- workflows ------------------------------------------------------------------------

    async def rest_page_workflows(
        self, tenant_id: str, *, name: str | None, offset: int, limit: int
    ) -> Page:
        row = await self.pool.fetchrow(
            query("rest_page_workflows"), tenant_id, name or None, offset, limit
        )
        return _page(row)

    async def rest_workflows(self, tenant_id: str, workflow_ids: Sequence[str]) -> list[Record]:
        if not workflow_ids:
            return []
        return list(
            await self.pool.fetch(query("rest_workflows_full"), tenant_id, list(workflow_ids))
        )

    async def rest_workflow_versions(
        self, tenant_id: str, workflow_id: str, *, version_id: str | None = None
    ) -> list[Record]:
        """Versions of a workflow, newest first (only ``version_id`` when given)."""
        return list(
            await self.pool.fetch(
                query("rest_workflow_versions"), tenant_id, workflow_id, version_id
            )
        )

    async def rest_version_event_keys(self, tenant_id: str, version_id: str) -> list[str]:
        rows = await self.pool.fetch(query("rest_version_event_keys"), tenant_id, version_id)
        return [r["event_key"] for r in rows]

    # -- workers --------------------------------------------------------------------------

    async def rest_workers(self, tenant_id: str, *, worker_id: str | None = None) -> list[Record]:
        return list(await self.pool.fetch(query("rest_workers"), tenant_id, worker_id))

    async def rest_worker_used_slots(
        self, tenant_id: str, worker_ids: Sequence[str]
    ) -> dict[str, dict[str, int]]:
        """``{worker_id: {slot_type: slots held}}``."""
        if not worker_ids:
            return {}
        used: dict[str, dict[str, int]] = {}
        rows = await self.pool.fetch(query("rest_worker_used_slots"), tenant_id, list(worker_ids))
        for r in rows:
            used.setdefault(str(r["worker_id"]), {})[r["slot_type"]] = int(r["used"])
        return used

    # -- events ---------------------------------------------------------------------------

    async def rest_page_events(
        self, tenant_id: str, f: EventFilter, *, offset: int, limit: int
    ) -> Page:
        row = await self.pool.fetchrow(
            query("rest_page_events"),
            tenant_id,
            f.since,
            f.until,
            _opt_list(f.keys),
            _opt_list(f.event_ids),
            _opt_list(f.scopes),
            # as text, so the statement does not depend on the pool's jsonb codec
            json.dumps(f.additional_metadata) if f.additional_metadata else None,
            _opt_list(f.workflow_ids),
            _opt_list(f.run_statuses),
            offset,
            limit,
        )
        return _page(row)

    async def rest_events(self, tenant_id: str, event_ids: Sequence[str]) -> list[Record]:
        if not event_ids:
            return []
        return list(await self.pool.fetch(query("rest_events_full"), tenant_id, list(event_ids)))
