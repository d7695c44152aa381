"""Read models of the web dashboard (``api/dashboard``): runs, one run with its DAG, attempts
and logs, workflows, workers, queues, schedules, events, rate limits and WorkerPools.

Each method returns plain dataclasses built from a few named statements
(``db/sql/queries/dashboard.sql`` for what the REST API has no statement for), so the pages
never see database rows and the api layer never imports ``db``. Every read takes the tenant
and filters on it.

Traces: a run page gets a "Trace" section when ``spans_for_run`` is given and returns spans
for the run. It is called as ``spans_for_run(tenant_id=..., run_id=...)`` and may be a plain
or an async function returning a list of dicts (see ``api/dashboard/runs.py`` for the keys a
span may have).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hewer.engine.db.dashboard_repo import PoolReport
from hewer.engine.db.reads import RunFilter
from hewer.engine.db.repository import Repository
from hewer.engine.services.autoscaling import Autoscaling, TaskStat
from hewer.engine.services.dashboard_views import (
    PoolPoint,
    PoolView,
    WorkerView,
    WorkflowView,
    pool_views,
    worker_view,
    workflow_view,
)

__all__ = [
    "Attempt",
    "Dashboard",
    "LogLine",
    "PoolPoint",
    "PoolReport",
    "PoolView",
    "QueuesView",
    "RunDetail",
    "RunFilter",
    "RunRow",
    "RunsPage",
    "SpansForRun",
    "TaskView",
    "Tenant",
    "WorkerView",
    "WorkflowView",
]

SpanList = list[dict[str, Any]]
SpansForRun = Callable[..., SpanList | Awaitable[SpanList]]

FINAL_STATUSES = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
# a run page shows at most this many log lines (the REST log endpoint pages through more)
MAX_RUN_LOG_LINES = 2000
EVENTS_SHOWN = 200
POOL_HISTORY_HOURS = 1


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class RunRow:
    id: str
    workflow: str
    status: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class RunsPage:
    total: int
    offset: int
    limit: int
    rows: list[RunRow]


@dataclass(frozen=True, slots=True)
class TaskView:
    id: str
    name: str
    status: str
    parents: list[str]
    retry_count: int
    is_skipped: bool
    worker_id: str | None
    output: Any
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None
    on_failure: bool = False


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt of one task: queued, then assigned to a worker, started, ended."""

    task_id: str
    task: str
    retry_count: int
    queued_at: datetime
    assigned_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    outcome: str | None
    worker_id: str | None


@dataclass(frozen=True, slots=True)
class LogLine:
    task: str
    retry_count: int
    level: str
    message: str
    at: datetime


@dataclass(slots=True)
class RunDetail:
    id: str
    workflow: str
    workflow_id: str
    status: str
    input: Any
    metadata: Any
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    parent_run_id: str | None
    tasks: list[TaskView]
    attempts: list[Attempt]
    logs: list[LogLine]
    children: list[RunRow]
    spans: SpanList = field(default_factory=list)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def errors(self) -> list[TaskView]:
        return [t for t in self.tasks if t.error]


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    at: datetime
    queued: int
    running: int


@dataclass(frozen=True, slots=True)
class QueuesView:
    stats: dict[str, TaskStat]
    history: list[HistoryPoint]
    oldest_queued_age_seconds: float | None

    @property
    def queued(self) -> int:
        return sum(s.queued.total for s in self.stats.values() if s.queued is not None)

    @property
    def running(self) -> int:
        return sum(s.running.total for s in self.stats.values() if s.running is not None)


def _json(value: Any) -> Any:
    """A stored JSON value (text or decoded) as Python; text that is not JSON stays text."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _run_row(r: Any) -> RunRow:
    return RunRow(
        id=str(r["id"]),
        workflow=r["workflow_name"],
        status=r["status"],
        created_at=r["created_at"],
        started_at=r["started_at"],
        finished_at=r["finished_at"],
    )


class Dashboard:
    def __init__(
        self,
        *,
        repo: Repository,
        autoscaling: Autoscaling,
        spans_for_run: SpansForRun | None = None,
    ) -> None:
        self._repo = repo
        self._autoscaling = autoscaling
        # set by the assembly when traces are recorded (see the module docstring)
        self.spans_for_run = spans_for_run

    # -- tenants ----------------------------------------------------------------------------

    async def tenants(self, tenant_ids: Sequence[str] | None) -> list[Tenant]:
        """The named tenants that exist, by name; ``None``: every tenant."""
        rows = await self._repo.dash_tenants(tenant_ids)
        return [Tenant(id=str(r["id"]), name=r["name"]) for r in rows]

    async def workflow_names(self, tenant_id: str) -> list[Tenant]:
        """``(id, name)`` of the tenant's workflows, for filters and forms."""
        rows = await self._repo.dash_workflow_names(tenant_id)
        return [Tenant(id=str(r["id"]), name=r["name"]) for r in rows]

    # -- runs -------------------------------------------------------------------------------

    async def runs(self, tenant_id: str, f: RunFilter, *, offset: int, limit: int) -> RunsPage:
        total, rows = await self._repo.dash_runs_page(tenant_id, f, offset=offset, limit=limit)
        return RunsPage(total=total, offset=offset, limit=limit, rows=[_run_row(r) for r in rows])

    async def run(self, tenant_id: str, run_id: str) -> RunDetail | None:
        found = await self._repo.rest_runs(tenant_id, [run_id])
        if not found:
            return None
        run = found[0]
        tasks = await self._repo.rest_tasks(tenant_id, run_ids=[run_id])
        steps = await self._repo.rest_version_steps(tenant_id, [str(run["workflow_version_id"])])
        by_step = {str(s["id"]): s for s in steps}
        views = []
        for t in tasks:
            step = by_step.get(str(t["step_id"]))
            views.append(
                TaskView(
                    id=str(t["id"]),
                    name=t["readable_id"],
                    status="SKIPPED" if t["is_skipped"] else t["status"],
                    parents=list(step["parents"]) if step is not None else [],
                    retry_count=int(t["retry_count"]),
                    is_skipped=bool(t["is_skipped"]),
                    worker_id=None if t["worker_id"] is None else str(t["worker_id"]),
                    output=_json(t["output"]),
                    error=t["error"],
                    started_at=t["started_at"],
                    finished_at=t["finished_at"],
                    on_failure=step is not None and step["kind"] == "on_failure",
                )
            )
        attempts = [
            Attempt(
                task_id=str(a["task_id"]),
                task=a["readable_id"],
                retry_count=int(a["retry_count"]),
                queued_at=a["first_at"],
                assigned_at=a["assigned_at"],
                started_at=a["started_at"],
                ended_at=a["ended_at"],
                outcome=a["outcome"],
                worker_id=None if a["worker_id"] is None else str(a["worker_id"]),
            )
            for a in await self._repo.dash_run_attempts(tenant_id, run_id)
        ]
        logs = [
            LogLine(
                task=r["readable_id"],
                retry_count=int(r["retry_count"]),
                level=str(r["level"] or "INFO").upper(),
                message=r["message"],
                at=r["created_at"],
            )
            for r in await self._repo.dash_run_logs(tenant_id, run_id, limit=MAX_RUN_LOG_LINES)
        ]
        children = [_run_row(r) for r in await self._repo.dash_child_runs(tenant_id, run_id)]
        return RunDetail(
            id=str(run["id"]),
            workflow=run["workflow_name"],
            workflow_id=str(run["workflow_id"]),
            status=run["status"],
            input=_json(run["input"]),
            metadata=_json(run["additional_metadata"]),
            created_at=run["created_at"],
            started_at=run["started_at"],
            finished_at=run["finished_at"],
            parent_run_id=None if run["parent_run_id"] is None else str(run["parent_run_id"]),
            tasks=views,
            attempts=attempts,
            logs=logs,
            children=children,
            spans=await self._spans(tenant_id, run_id),
        )

    async def _spans(self, tenant_id: str, run_id: str) -> SpanList:
        if self.spans_for_run is None:
            return []
        found = self.spans_for_run(tenant_id=tenant_id, run_id=run_id)
        if inspect.isawaitable(found):
            found = await found
        return list(found)

    # -- workflows, workers, queues ---------------------------------------------------------

    async def workflows(self, tenant_id: str) -> list[WorkflowView]:
        return [workflow_view(r) for r in await self._repo.dash_workflows(tenant_id, None)]

    async def workflow(self, tenant_id: str, workflow_id: str) -> WorkflowView | None:
        rows = await self._repo.dash_workflows(tenant_id, workflow_id)
        if not rows:
            return None
        versions = await self._repo.dash_workflow_versions(tenant_id, workflow_id)
        return workflow_view(rows[0], versions=versions)

    async def workers(self, tenant_id: str, *, heartbeat_timeout: float) -> list[WorkerView]:
        rows = await self._repo.rest_workers(tenant_id)
        used = await self._repo.rest_worker_used_slots(tenant_id, [str(r["id"]) for r in rows])
        return [
            worker_view(r, used.get(str(r["id"]), {}), heartbeat_timeout=heartbeat_timeout)
            for r in rows
        ]

    async def queues(self, tenant_id: str) -> QueuesView:
        stats = await self._autoscaling.task_stats(tenant_id)
        history = [
            HistoryPoint(at=r["at"], queued=int(r["queued"]), running=int(r["running"]))
            for r in await self._repo.dash_queue_history(tenant_id)
        ]
        oldest = await self._repo.dash_oldest_queued(tenant_id)
        age = (
            None
            if oldest["oldest"] is None
            else max(0.0, (oldest["now"] - oldest["oldest"]).total_seconds())
        )
        return QueuesView(stats=stats, history=history, oldest_queued_age_seconds=age)

    # -- schedules, events, rate limits -----------------------------------------------------

    async def crons(self, tenant_id: str) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._repo.dash_crons(tenant_id)]

    async def scheduled(self, tenant_id: str) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._repo.dash_scheduled(tenant_id)]

    async def events(self, tenant_id: str) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._repo.dash_events(tenant_id, limit=EVENTS_SHOWN)]

    async def filters(self, tenant_id: str) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._repo.dash_filters(tenant_id)]

    async def rate_limits(self, tenant_id: str) -> list[dict[str, Any]]:
        rows = await self._repo.page_rate_limits(
            tenant_id, search=None, order_by="key", direction="ASC", offset=0, limit=1000
        )
        return [dict(r) for r in rows]

    # -- WorkerPools ------------------------------------------------------------------------

    async def put_pool_report(self, tenant_id: str, report: PoolReport) -> None:
        await self._repo.put_pool_report(tenant_id, report)

    async def delete_pool_report(self, tenant_id: str, pool: str) -> bool:
        return await self._repo.delete_pool_report(tenant_id, pool)

    async def pools(self, tenant_id: str) -> list[PoolView]:
        reports = await self._repo.pool_reports(tenant_id)
        history = await self._repo.pool_history(tenant_id, hours=POOL_HISTORY_HOURS)
        return pool_views(reports, history)
