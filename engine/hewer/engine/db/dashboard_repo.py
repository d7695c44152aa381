"""Reads behind the web dashboard, and the WorkerPool reports the operator posts
(``sql/queries/dashboard.sql``). Every statement filters on the tenant."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hewer.engine.db.base import Record, RepositoryBase
from hewer.engine.db.queries import query
from hewer.engine.db.reads import RunFilter


@dataclass(frozen=True, slots=True)
class PoolReport:
    """What the operator reports about one WorkerPool (``namespace/name``)."""

    pool: str
    workflows: Sequence[str]
    autoscaling: bool
    min_replicas: int | None
    max_replicas: int | None
    desired_replicas: int
    current_replicas: int
    ready_replicas: int | None
    queued: int | None
    running: int | None
    busy_workers: int | None
    reason: str
    # "up", "down" or "hold" when this report carries a scale decision
    decision: str | None


def _run_filter_args(tenant_id: str, f: RunFilter) -> list[Any]:
    pairs = f.additional_metadata or None
    return [
        tenant_id,
        f.since,
        f.until,
        None if f.statuses is None else list(f.statuses),
        None if f.workflow_ids is None else list(f.workflow_ids),
        None if pairs is None else [k for k, _ in pairs],
        None if pairs is None else [v for _, v in pairs],
    ]


class DashboardQueries(RepositoryBase):
    async def dash_tenants(self, tenant_ids: Sequence[str] | None) -> list[Record]:
        ids = None if tenant_ids is None else list(tenant_ids)
        return list(await self.pool.fetch(query("dash_tenants"), ids))

    async def dash_workflow_names(self, tenant_id: str) -> list[Record]:
        return list(await self.pool.fetch(query("dash_workflow_names"), tenant_id))

    async def dash_runs_page(
        self, tenant_id: str, f: RunFilter, *, offset: int, limit: int
    ) -> tuple[int, list[Record]]:
        args = _run_filter_args(tenant_id, f)
        rows = list(await self.pool.fetch(query("dash_runs_page"), *args, offset, limit))
        if rows:
            return int(rows[0]["total"]), rows
        total = await self.pool.fetchval(query("dash_runs_total"), *args)
        return int(total or 0), []

    async def dash_run_attempts(self, tenant_id: str, run_id: str) -> list[Record]:
        return list(await self.pool.fetch(query("dash_run_attempts"), tenant_id, run_id))

    async def dash_run_logs(self, tenant_id: str, run_id: str, *, limit: int) -> list[Record]:
        return list(await self.pool.fetch(query("dash_run_logs"), tenant_id, run_id, limit))

    async def dash_child_runs(self, tenant_id: str, run_id: str) -> list[Record]:
        return list(await self.pool.fetch(query("dash_child_runs"), tenant_id, run_id))

    async def dash_workflows(self, tenant_id: str, workflow_id: str | None) -> list[Record]:
        return list(await self.pool.fetch(query("dash_workflows"), tenant_id, workflow_id))

    async def dash_workflow_versions(self, tenant_id: str, workflow_id: str) -> list[Record]:
        return list(await self.pool.fetch(query("dash_workflow_versions"), tenant_id, workflow_id))

    async def dash_queue_history(self, tenant_id: str) -> list[Record]:
        return list(await self.pool.fetch(query("dash_queue_history"), tenant_id))

    async def dash_oldest_queued(self, tenant_id: str) -> Record:
        row = await self.pool.fetchrow(query("dash_oldest_queued"), tenant_id)
        assert row is not None  # an aggregate: always one row
        return row

    async def dash_crons(self, tenant_id: str) -> list[Record]:
        return list(await self.pool.fetch(query("dash_crons"), tenant_id))

    async def dash_scheduled(self, tenant_id: str) -> list[Record]:
        return list(await self.pool.fetch(query("dash_scheduled"), tenant_id))

    async def dash_events(self, tenant_id: str, *, limit: int) -> list[Record]:
        return list(await self.pool.fetch(query("dash_events"), tenant_id, limit))

    async def dash_filters(self, tenant_id: str) -> list[Record]:
        return list(await self.pool.fetch(query("dash_filters"), tenant_id))

    # -- WorkerPool reports -------------------------------------------------------------------

    async def put_pool_report(self, tenant_id: str, report: PoolReport) -> None:
        await self.pool.execute(
            query("dash_put_pool_report"),
            tenant_id,
            report.pool,
            list(report.workflows),
            report.autoscaling,
            report.min_replicas,
            report.max_replicas,
            report.desired_replicas,
            report.current_replicas,
            report.ready_replicas,
            report.queued,
            report.running,
            report.busy_workers,
            report.reason,
            report.decision,
        )

    async def delete_pool_report(self, tenant_id: str, pool: str) -> bool:
        return bool(await self.pool.fetchval(query("dash_delete_pool_report"), tenant_id, pool))

    async def pool_reports(self, tenant_id: str) -> list[Record]:
        return list(await self.pool.fetch(query("dash_pool_reports"), tenant_id))

    async def pool_history(self, tenant_id: str, *, hours: int) -> list[Record]:
        return list(await self.pool.fetch(query("dash_pool_history"), tenant_id, hours))
