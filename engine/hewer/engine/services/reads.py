"""What the API layer reads: runs, tasks, events, workflows, workers, schedules, metrics.

The REST and gRPC handlers read through this service, never the repository, so the layers stay
``api -> services -> db`` (``lint-imports`` checks it). Each method is one repository read; the
filter and page types the reads take and return are re-exported here for the same reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from hewer.engine.db.base import Record
from hewer.engine.db.reads import EventFilter, LogFilter, Page, RunFilter
from hewer.engine.db.repository import Repository
from hewer.engine.db.schedule_repo import Page as IdPage

__all__ = ["EventFilter", "LogFilter", "Page", "Reads", "Record", "RunFilter"]


class Reads:
    def __init__(self, repo: Repository) -> None:
        self._repo = repo

    async def get_run(self, *, tenant_id: str, run_id: str) -> Record | None:
        return await self._repo.get_run(tenant_id=tenant_id, run_id=run_id)

    async def run_tasks_detail(self, run_id: str) -> list[Record]:
        return await self._repo.run_tasks_detail(run_id)

    async def get_crons(self, tenant_id: str, ids: Sequence[str]) -> list[Record]:
        return await self._repo.get_crons(tenant_id, ids)

    async def get_scheduled(self, tenant_id: str, ids: Sequence[str]) -> list[Record]:
        return await self._repo.get_scheduled(tenant_id, ids)

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
    ) -> IdPage:
        return await self._repo.page_crons(
            tenant_id,
            workflow_id=workflow_id,
            workflow_name=workflow_name,
            cron_name=cron_name,
            metadata=metadata,
            order_by=order_by,
            direction=direction,
            offset=offset,
            limit=limit,
        )

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
    ) -> IdPage:
        return await self._repo.page_scheduled(
            tenant_id,
            workflow_id=workflow_id,
            parent_task_id=parent_task_id,
            metadata=metadata,
            statuses=statuses,
            order_by=order_by,
            direction=direction,
            offset=offset,
            limit=limit,
        )

    async def get_tenant(self, tenant_id: str) -> Record | None:
        return await self._repo.get_tenant(tenant_id)

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
        return await self._repo.page_rate_limits(
            tenant_id,
            search=search,
            order_by=order_by,
            direction=direction,
            offset=offset,
            limit=limit,
        )

    async def queue_depths(self) -> list[Record]:
        return await self._repo.queue_depths()

    async def task_stats(self, tenant_id: str) -> list[Record]:
        return await self._repo.task_stats(tenant_id)

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
        return await self._repo.task_status_counts(
            tenant_id,
            since=since,
            until=until,
            workflow_ids=workflow_ids,
            parent_task_id=parent_task_id,
            triggering_event_id=triggering_event_id,
        )

    async def workflow_queue_metrics(self, tenant_id: str) -> list[Record]:
        return await self._repo.workflow_queue_metrics(tenant_id)

    async def worker_slot_totals(self) -> list[Record]:
        return await self._repo.worker_slot_totals()

    async def rest_events(self, tenant_id: str, event_ids: Sequence[str]) -> list[Record]:
        return await self._repo.rest_events(tenant_id, event_ids)

    async def rest_page_events(
        self, tenant_id: str, f: EventFilter, *, offset: int, limit: int
    ) -> Page:
        return await self._repo.rest_page_events(tenant_id, f, offset=offset, limit=limit)

    async def rest_page_runs(
        self, tenant_id: str, f: RunFilter, *, offset: int, limit: int
    ) -> Page:
        return await self._repo.rest_page_runs(tenant_id, f, offset=offset, limit=limit)

    async def rest_page_tasks(
        self, tenant_id: str, f: RunFilter, *, offset: int, limit: int
    ) -> Page:
        return await self._repo.rest_page_tasks(tenant_id, f, offset=offset, limit=limit)

    async def rest_page_workflows(
        self, tenant_id: str, *, name: str | None, offset: int, limit: int
    ) -> Page:
        return await self._repo.rest_page_workflows(
            tenant_id, name=name, offset=offset, limit=limit
        )

    async def rest_resolve_run(self, tenant_id: str, run_or_task_id: str) -> str | None:
        return await self._repo.rest_resolve_run(tenant_id, run_or_task_id)

    async def rest_run_task_events(self, tenant_id: str, run_id: str) -> list[Record]:
        return await self._repo.rest_run_task_events(tenant_id, run_id)

    async def rest_runs(self, tenant_id: str, run_ids: Sequence[str]) -> list[Record]:
        return await self._repo.rest_runs(tenant_id, run_ids)

    async def rest_task_logs(self, tenant_id: str, task_id: str, f: LogFilter) -> list[Record]:
        return await self._repo.rest_task_logs(tenant_id, task_id, f)

    async def rest_tasks(
        self, tenant_id: str, *, task_ids: Sequence[str] = (), run_ids: Sequence[str] = ()
    ) -> list[Record]:
        return await self._repo.rest_tasks(tenant_id, task_ids=task_ids, run_ids=run_ids)

    async def rest_version_event_keys(self, tenant_id: str, version_id: str) -> list[str]:
        return await self._repo.rest_version_event_keys(tenant_id, version_id)

    async def rest_version_steps(self, tenant_id: str, version_ids: Sequence[str]) -> list[Record]:
        return await self._repo.rest_version_steps(tenant_id, version_ids)

    async def rest_worker_used_slots(
        self, tenant_id: str, worker_ids: Sequence[str]
    ) -> dict[str, dict[str, int]]:
        return await self._repo.rest_worker_used_slots(tenant_id, worker_ids)

    async def rest_workers(self, tenant_id: str, *, worker_id: str | None = None) -> list[Record]:
        return await self._repo.rest_workers(tenant_id, worker_id=worker_id)

    async def rest_workflow_versions(
        self, tenant_id: str, workflow_id: str, *, version_id: str | None = None
    ) -> list[Record]:
        return await self._repo.rest_workflow_versions(
            tenant_id, workflow_id, version_id=version_id
        )

    async def rest_workflows(self, tenant_id: str, workflow_ids: Sequence[str]) -> list[Record]:
        return await self._repo.rest_workflows(tenant_id, workflow_ids)

    async def get_declared_workflow(self, tenant_id: str, name: str) -> Record | None:
        return await self._repo.get_declared_workflow(tenant_id, name)

    async def latest_version_by_name(self, tenant_id: str, name: str) -> Record | None:
        return await self._repo.latest_version_by_name(tenant_id, name)

    async def list_webhooks(
        self,
        tenant_id: str,
        *,
        names: Sequence[str] | None,
        source_names: Sequence[str] | None,
        offset: int,
        limit: int,
    ) -> list[Record]:
        return await self._repo.list_webhooks(
            tenant_id, names=names, source_names=source_names, offset=offset, limit=limit
        )

    async def get_webhook(self, tenant_id: str, name: str) -> Record | None:
        return await self._repo.get_webhook(tenant_id, name)

    async def get_filter(self, tenant_id: str, filter_id: str) -> Record | None:
        return await self._repo.get_filter(tenant_id, filter_id)

    async def page_filters(
        self,
        tenant_id: str,
        *,
        workflow_ids: Sequence[str] | None,
        scopes: Sequence[str] | None,
        offset: int,
        limit: int,
    ) -> tuple[int, list[Record]]:
        return await self._repo.page_filters(
            tenant_id, workflow_ids=workflow_ids, scopes=scopes, offset=offset, limit=limit
        )

    async def owned_objects_of(self, tenant_id: str, resource: str | None) -> list[Record]:
        return await self._repo.owned_objects_of(tenant_id, resource)
