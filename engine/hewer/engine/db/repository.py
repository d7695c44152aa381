"""The only code that talks to asyncpg.

Services compose units of work out of these primitives inside :meth:`Repository.transaction`;
each primitive is one named statement (see ``sql/queries``), so a unit of work costs as many
round trips as it has primitives, and batched primitives take arrays (``unnest``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg

from hewer.engine.core.dag import NewTask
from hewer.engine.core.definition import WorkflowSpec
from hewer.engine.core.model import (
    StepDef,
    StepKind,
    TaskSnapshot,
    TaskStatus,
    WorkflowVersionDef,
)
from hewer.engine.db.queries import query
from hewer.engine.db.reads import ReadQueries

if TYPE_CHECKING:
    # a connection checked out of the pool, on which the statements of a unit of work run
    Conn: TypeAlias = (
        asyncpg.pool.PoolConnectionProxy[asyncpg.Record] | asyncpg.Connection[asyncpg.Record]
    )
else:
    Conn = asyncpg.Connection
Record = asyncpg.Record


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(dsn: str, *, size: int) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn, min_size=min(2, size), max_size=size, init=_init_connection
    )
    assert pool is not None
    return pool


@dataclass(frozen=True, slots=True)
class NewRun:
    """A run to insert together with its initial tasks."""

    id: str
    workflow_id: str
    version_id: str
    input_json: str
    metadata_json: str
    priority: int
    parent_task_id: str | None = None
    parent_run_id: str | None = None
    child_index: int | None = None
    child_key: str | None = None
    dedupe_key: str | None = None
    desired_worker_id: str | None = None
    event_id: str | None = None
    event_key: str | None = None


@dataclass(frozen=True, slots=True)
class NewTaskRow:
    id: str
    run_id: str
    task: NewTask
    priority: int
    desired_worker_id: str | None = None


@dataclass(frozen=True, slots=True)
class QueueEntry:
    task_id: str
    retry_count: int
    action_id: str
    priority: int
    slot_requests: dict[str, int]
    desired_worker_id: str | None
    delay_seconds: float
    schedule_timeout_seconds: int


@dataclass(frozen=True, slots=True)
class TaskEvent:
    task_id: str
    run_id: str
    retry_count: int
    event_type: str
    message: str = ""
    output: str | None = None
    worker_id: str | None = None


class Repository(ReadQueries):
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield conn

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        async with self.pool.acquire() as conn:
            yield conn

    async def close(self) -> None:
        await self.pool.close()

    # -- tenants and tokens ---------------------------------------------------------------

    async def ensure_tenant(self, name: str) -> str:
        return str(await self.pool.fetchval(query("ensure_tenant"), name))

    async def get_tenant(self, tenant_id: str) -> Record | None:
        return await self.pool.fetchrow(query("get_tenant"), tenant_id)

    async def get_tenant_by_name(self, name: str) -> Record | None:
        return await self.pool.fetchrow(query("get_tenant_by_name"), name)

    async def ensure_secret(self, name: str, value: bytes) -> bytes:
        return bytes(await self.pool.fetchval(query("ensure_secret"), name, value))

    async def insert_api_token(
        self, *, token_id: str, tenant_id: str, name: str, expires_at: datetime
    ) -> None:
        await self.pool.execute(query("insert_api_token"), token_id, tenant_id, name, expires_at)

    async def get_api_token(self, token_id: str) -> Record | None:
        return await self.pool.fetchrow(query("get_api_token"), token_id)

    async def revoke_api_token(self, token_id: str) -> bool:
        return await self.pool.fetchval(query("revoke_api_token"), token_id) is not None

    # -- definitions ----------------------------------------------------------------------

    async def put_workflow(
        self,
        *,
        tenant_id: str,
        spec: WorkflowSpec,
        definition: dict[str, Any],
        step_ids: Sequence[str],
    ) -> tuple[str, str, bool]:
        """Store a workflow version unless the latest one has the same checksum.

        Returns ``(version_id, workflow_id, created)``.
        """
        async with self.transaction() as conn:
            workflow_id = str(
                await conn.fetchval(
                    query("upsert_workflow"), tenant_id, spec.name, spec.description
                )
            )
            await conn.execute(query("lock_workflow"), workflow_id)
            latest = await conn.fetchrow(query("latest_version_of_workflow"), workflow_id)
            if latest is not None and latest["checksum"] == spec.checksum:
                return str(latest["id"]), workflow_id, False
            ordinal = 1 if latest is None else int(latest["ordinal"]) + 1
            version_id = str(
                await conn.fetchval(
                    query("insert_version"),
                    tenant_id,
                    workflow_id,
                    ordinal,
                    spec.version,
                    spec.checksum,
                    definition,
                    spec.sticky,
                    spec.default_priority,
                )
            )
            steps = spec.steps
            await conn.execute(
                query("insert_steps"),
                tenant_id,
                version_id,
                list(step_ids),
                [s.readable_id for s in steps],
                [s.action_id for s in steps],
                [s.kind.value for s in steps],
                [s.position for s in steps],
                [s.timeout_seconds for s in steps],
                [s.schedule_timeout_seconds for s in steps],
                [s.retries for s in steps],
                [s.backoff_factor for s in steps],
                [s.backoff_max_seconds for s in steps],
                [s.is_durable for s in steps],
                [json.dumps(s.slot_requests) for s in steps],
                [json.dumps(list(s.parents)) for s in steps],
            )
            id_of = {s.readable_id: sid for s, sid in zip(steps, step_ids, strict=True)}
            edges = [(id_of[p], id_of[s.readable_id]) for s in steps for p in s.parents]
            if edges:
                await conn.execute(
                    query("insert_edges"),
                    version_id,
                    [e[0] for e in edges],
                    [e[1] for e in edges],
                )
            if spec.event_triggers:
                await conn.execute(
                    query("insert_event_triggers"),
                    version_id,
                    tenant_id,
                    list(spec.event_triggers),
                )
            return version_id, workflow_id, True

    async def load_version(
        self, version_id: str, *, conn: Conn | None = None
    ) -> WorkflowVersionDef:
        target = conn or self.pool
        head = await target.fetchrow(query("load_version"), version_id)
        if head is None:
            raise KeyError(version_id)
        rows = await target.fetch(query("load_version_steps"), version_id)
        steps = tuple(
            StepDef(
                id=str(r["id"]),
                readable_id=r["readable_id"],
                action_id=r["action_id"],
                kind=StepKind(r["kind"]),
                position=r["position"],
                parents=tuple(r["parents"]),
                timeout_seconds=r["timeout_seconds"],
                schedule_timeout_seconds=r["schedule_timeout_seconds"],
                retries=r["retries"],
                backoff_factor=r["backoff_factor"],
                backoff_max_seconds=r["backoff_max_seconds"],
                is_durable=r["is_durable"],
                slot_requests=dict(r["slot_requests"]),
            )
            for r in rows
        )
        return WorkflowVersionDef(
            id=str(head["id"]),
            workflow_id=str(head["workflow_id"]),
            workflow_name=head["workflow_name"],
            default_priority=head["default_priority"],
            sticky=head["sticky"],
            steps=steps,
        )

    async def latest_version_by_name(self, tenant_id: str, name: str) -> Record | None:
        return await self.pool.fetchrow(query("latest_version_by_name"), tenant_id, name)

    async def workflow_names(self, workflow_ids: Sequence[str]) -> dict[str, str]:
        rows = await self.pool.fetch(query("workflow_names"), list(workflow_ids))
        return {str(r["id"]): r["name"] for r in rows}

    async def workflows_for_event_key(self, tenant_id: str, key: str) -> list[Record]:
        return list(await self.pool.fetch(query("workflows_for_event_key"), tenant_id, key))

    # -- runs and tasks -------------------------------------------------------------------

    async def insert_runs(self, conn: Conn, *, tenant_id: str, runs: Sequence[NewRun]) -> set[str]:
        """Insert runs; those whose dedupe key already exists are skipped. Returns new ids."""
        rows = await conn.fetch(
            query("insert_runs"),
            tenant_id,
            [r.id for r in runs],
            [r.workflow_id for r in runs],
            [r.version_id for r in runs],
            [r.input_json for r in runs],
            [r.metadata_json for r in runs],
            [r.priority for r in runs],
            [r.parent_task_id for r in runs],
            [r.parent_run_id for r in runs],
            [r.child_index for r in runs],
            [r.child_key for r in runs],
            [r.dedupe_key for r in runs],
            [r.desired_worker_id for r in runs],
            [r.event_id for r in runs],
            [r.event_key for r in runs],
        )
        return {str(r["id"]) for r in rows}

    async def runs_by_dedupe_key(
        self, conn: Conn, *, tenant_id: str, keys: Sequence[str]
    ) -> dict[str, str]:
        rows = await conn.fetch(query("runs_by_dedupe_key"), tenant_id, list(keys))
        return {r["dedupe_key"]: str(r["id"]) for r in rows}

    async def insert_tasks(
        self, conn: Conn, *, tenant_id: str, tasks: Sequence[NewTaskRow]
    ) -> None:
        if not tasks:
            return
        await conn.execute(
            query("insert_tasks"),
            tenant_id,
            [t.id for t in tasks],
            [t.run_id for t in tasks],
            [t.task.step.id for t in tasks],
            [t.task.step.readable_id for t in tasks],
            [t.task.step.action_id for t in tasks],
            [t.task.status.value for t in tasks],
            [t.priority for t in tasks],
            [json.dumps(t.task.payload_extra) for t in tasks],
            [json.dumps(t.task.step.slot_requests) for t in tasks],
            [t.task.step.timeout_seconds for t in tasks],
            [t.task.skipped for t in tasks],
            ['{"skipped": true}' if t.task.skipped else None for t in tasks],
        )

    async def insert_queue_items(
        self, conn: Conn, *, tenant_id: str, entries: Sequence[QueueEntry]
    ) -> None:
        if not entries:
            return
        await conn.execute(
            query("insert_queue_items"),
            tenant_id,
            [e.task_id for e in entries],
            [e.retry_count for e in entries],
            [e.action_id for e in entries],
            [e.priority for e in entries],
            [json.dumps(e.slot_requests) for e in entries],
            [e.desired_worker_id for e in entries],
            [e.delay_seconds for e in entries],
            [e.schedule_timeout_seconds for e in entries],
        )

    async def insert_task_events(
        self, conn: Conn, *, tenant_id: str, events: Sequence[TaskEvent]
    ) -> None:
        if not events:
            return
        await conn.execute(
            query("insert_task_events"),
            tenant_id,
            [e.task_id for e in events],
            [e.run_id for e in events],
            [e.retry_count for e in events],
            [e.event_type for e in events],
            [e.message for e in events],
            [e.output for e in events],
            [e.worker_id for e in events],
        )

    async def notify(self, conn: Conn, *, channel: str, payload: str) -> None:
        await conn.execute(query("notify"), channel, payload)

    async def worker_used_slots(
        self, conn: Conn, worker_ids: Sequence[str]
    ) -> dict[str, dict[str, int]]:
        used: dict[str, dict[str, int]] = {}
        for r in await conn.fetch(query("worker_used_slots"), list(worker_ids)):
            used.setdefault(str(r["worker_id"]), {})[r["slot_type"]] = r["used"]
        return used

    async def claim_queue_items(
        self, conn: Conn, *, tenant_id: str, limits: dict[str, int]
    ) -> list[Record]:
        return list(
            await conn.fetch(
                query("claim_queue_items"),
                tenant_id,
                list(limits.keys()),
                list(limits.values()),
            )
        )

    async def assign_tasks(
        self, conn: Conn, *, queue_ids: Sequence[int], worker_ids: Sequence[str]
    ) -> list[Record]:
        return list(await conn.fetch(query("assign_tasks"), list(queue_ids), list(worker_ids)))

    async def mark_task_started(self, *, task_id: str, retry_count: int) -> bool:
        row = await self.pool.fetchval(query("mark_task_started"), task_id, retry_count)
        return row is not None

    async def get_task(
        self, task_id: str, *, tenant_id: str, conn: Conn | None = None
    ) -> Record | None:
        return await (conn or self.pool).fetchrow(query("get_task"), task_id, tenant_id)

    async def finish_task(
        self,
        conn: Conn,
        *,
        task_id: str,
        retry_count: int,
        status: TaskStatus,
        output: str | None,
        error: str | None,
    ) -> Record | None:
        return await conn.fetchrow(
            query("finish_task"), task_id, retry_count, status.value, output, error
        )

    async def requeue_task(
        self, conn: Conn, *, task_id: str, retry_count: int, app_failure: bool, error: str | None
    ) -> Record | None:
        return await conn.fetchrow(query("requeue_task"), task_id, retry_count, app_failure, error)

    async def cancel_task(self, conn: Conn, *, tenant_id: str, task_id: str) -> list[Record]:
        return list(await conn.fetch(query("cancel_task"), tenant_id, task_id))

    async def parent_context(self, *, tenant_id: str, task_id: str) -> Record | None:
        return await self.pool.fetchrow(query("parent_context"), tenant_id, task_id)

    async def local_workers_state(
        self, conn: Conn, *, worker_ids: Sequence[str], heartbeat_timeout: float
    ) -> list[Record]:
        return list(
            await conn.fetch(query("local_workers_state"), list(worker_ids), heartbeat_timeout)
        )

    async def lock_run(self, conn: Conn, run_id: str) -> Record | None:
        return await conn.fetchrow(query("lock_run"), run_id)

    async def run_task_snapshot(self, conn: Conn, run_id: str) -> list[TaskSnapshot]:
        return [
            TaskSnapshot(
                id=str(r["id"]),
                step_id=str(r["step_id"]),
                readable_id=r["readable_id"],
                status=TaskStatus(r["status"]),
                output=r["output"],
                error=r["error"],
                is_skipped=r["is_skipped"],
            )
            for r in await conn.fetch(query("run_task_snapshot"), run_id)
        ]

    async def set_run_status(
        self, conn: Conn, *, run_id: str, status: TaskStatus, finished: bool
    ) -> None:
        await conn.execute(query("set_run_status"), run_id, status.value, finished)

    async def run_priority(self, conn: Conn, run_id: str) -> Record | None:
        return await conn.fetchrow(query("run_priority"), run_id)

    # -- bus ------------------------------------------------------------------------------

    async def park_bus_payload(self, conn: Conn | None, body: str) -> int:
        return int(await (conn or self.pool).fetchval(query("park_bus_payload"), body))

    async def fetch_bus_payload(self, ref: int) -> str | None:
        body = await self.pool.fetchval(query("fetch_bus_payload"), ref)
        return None if body is None else str(body)

    # -- deadlines --------------------------------------------------------------------------

    async def expired_tasks(self, *, limit: int) -> list[Record]:
        return list(await self.pool.fetch(query("expired_tasks"), limit))

    async def schedule_timed_out(self, *, limit: int) -> list[Record]:
        return list(await self.pool.fetch(query("schedule_timed_out"), limit))

    async def tasks_of_dead_workers(self, *, stale_after: float, limit: int) -> list[Record]:
        return list(await self.pool.fetch(query("tasks_of_dead_workers"), stale_after, limit))

    async def deactivate_dead_workers(self, *, stale_after: float) -> None:
        await self.pool.execute(query("deactivate_dead_workers"), stale_after)

    async def next_deadline(self) -> datetime | None:
        value = await self.pool.fetchval(query("next_deadline"))
        return value if isinstance(value, datetime) else None

    async def refresh_timeout(
        self, *, tenant_id: str, task_id: str, seconds: float
    ) -> datetime | None:
        value = await self.pool.fetchval(query("refresh_timeout"), task_id, tenant_id, seconds)
        return value if isinstance(value, datetime) else None

    # -- results ------------------------------------------------------------------------------

    async def finished_runs(self, run_ids: Sequence[str]) -> dict[str, str]:
        rows = await self.pool.fetch(query("finished_runs"), list(run_ids))
        return {str(r["id"]): r["status"] for r in rows}

    async def run_results(self, run_ids: Sequence[str]) -> dict[str, list[Record]]:
        results: dict[str, list[Record]] = {}
        for r in await self.pool.fetch(query("run_results"), list(run_ids)):
            results.setdefault(str(r["workflow_run_id"]), []).append(r)
        return results

    async def get_run(self, *, tenant_id: str, run_id: str) -> Record | None:
        return await self.pool.fetchrow(query("get_run"), run_id, tenant_id)

    async def run_tasks_detail(self, run_id: str) -> list[Record]:
        return list(await self.pool.fetch(query("run_tasks_detail"), run_id))

    async def task_run_id(self, *, tenant_id: str, task_id: str) -> str | None:
        value = await self.pool.fetchval(query("task_run_id"), task_id, tenant_id)
        return None if value is None else str(value)

    # -- operator actions ---------------------------------------------------------------------

    async def active_tasks_for_ids(self, *, tenant_id: str, ids: Sequence[str]) -> list[str]:
        rows = await self.pool.fetch(query("active_tasks_for_ids"), tenant_id, list(ids))
        return [str(r["id"]) for r in rows]

    async def replay_targets(self, *, tenant_id: str, ids: Sequence[str]) -> list[Record]:
        return list(await self.pool.fetch(query("replay_targets"), tenant_id, list(ids)))

    async def reset_task(self, conn: Conn, task_id: str) -> Record | None:
        return await conn.fetchrow(query("reset_task"), task_id)

    async def delete_tasks(self, conn: Conn, task_ids: Sequence[str]) -> None:
        if task_ids:
            await conn.execute(query("delete_tasks"), list(task_ids))

    async def set_worker_paused(self, *, tenant_id: str, worker_id: str, paused: bool) -> bool:
        row = await self.pool.fetchval(query("set_worker_paused"), worker_id, tenant_id, paused)
        return row is not None

    # -- workers ------------------------------------------------------------------------------

    async def insert_worker(
        self,
        *,
        worker_id: str,
        tenant_id: str,
        name: str,
        actions: Sequence[str],
        slot_config: dict[str, int],
        labels: dict[str, Any],
        runtime_info: dict[str, Any],
    ) -> None:
        await self.pool.execute(
            query("insert_worker"),
            worker_id,
            tenant_id,
            name,
            list(actions),
            slot_config,
            labels,
            runtime_info,
        )

    async def get_worker(self, *, tenant_id: str, worker_id: str) -> Record | None:
        return await self.pool.fetchrow(query("get_worker"), worker_id, tenant_id)

    async def worker_heartbeat(self, *, tenant_id: str, worker_id: str) -> Record | None:
        return await self.pool.fetchrow(query("worker_heartbeat"), worker_id, tenant_id)

    async def worker_listening(self, *, tenant_id: str, worker_id: str, engine_id: str) -> bool:
        row = await self.pool.fetchval(query("worker_listening"), worker_id, tenant_id, engine_id)
        return row is not None

    async def worker_disconnected(self, *, worker_id: str, engine_id: str) -> None:
        await self.pool.execute(query("worker_disconnected"), worker_id, engine_id)

    async def merge_worker_labels(
        self, *, tenant_id: str, worker_id: str, labels: dict[str, Any]
    ) -> bool:
        row = await self.pool.fetchval(query("merge_worker_labels"), worker_id, tenant_id, labels)
        return row is not None

    async def release_slot(self, *, tenant_id: str, task_id: str) -> str | None:
        value = await self.pool.fetchval(query("release_slot"), task_id, tenant_id)
        return None if value is None else str(value)

    # -- events and logs ----------------------------------------------------------------------

    async def insert_event(
        self,
        *,
        event_id: str,
        tenant_id: str,
        key: str,
        payload: dict[str, Any],
        metadata: dict[str, Any],
        priority: int | None,
        scope: str | None,
    ) -> datetime:
        value = await self.pool.fetchval(
            query("insert_event"), event_id, tenant_id, key, payload, metadata, priority, scope
        )
        assert isinstance(value, datetime)
        return value

    async def insert_log_line(
        self,
        *,
        tenant_id: str,
        task_id: str,
        retry_count: int | None,
        level: str,
        message: str,
        metadata: dict[str, Any],
        created_at: datetime,
    ) -> bool:
        value = await self.pool.fetchval(
            query("insert_log_line"),
            tenant_id,
            task_id,
            retry_count,
            level,
            message,
            metadata,
            created_at,
        )
        return value is not None
