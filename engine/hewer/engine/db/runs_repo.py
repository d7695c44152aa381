"""Runs, tasks and the queue: triggers, claims, outcomes, deadlines, results, replays."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from hewer.engine.core.model import TaskSnapshot, TaskStatus
from hewer.engine.db.base import (
    Conn,
    NewRun,
    NewTaskRow,
    QueueEntry,
    Record,
    RepositoryBase,
    TaskEvent,
)
from hewer.engine.db.queries import query


class RunQueries(RepositoryBase):
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
            [r.desired_worker_labels for r in runs],
        )
        return {str(r["id"]) for r in rows}

    async def spawned_dedupe_keys(
        self, conn: Conn, *, tenant_id: str, run_ids: Sequence[str]
    ) -> dict[str, str]:
        """The dedupe keys of those of ``run_ids`` (child runs' derived ids) that exist."""
        rows = await conn.fetch(query("spawned_dedupe_keys"), tenant_id, list(run_ids))
        return {r["dedupe_key"]: str(r["id"]) for r in rows}

    async def insert_tasks(
        self, conn: Conn, *, tenant_id: str, tasks: Sequence[NewTaskRow]
    ) -> None:
        if not tasks:
            return
        await conn.execute(
            query("insert_tasks"),
            tenant_id,
            *_task_columns(tasks),
        )

    async def insert_queue_items(
        self, conn: Conn, *, tenant_id: str, entries: Sequence[QueueEntry]
    ) -> None:
        if not entries:
            return
        await conn.execute(
            query("insert_queue_items"),
            tenant_id,
            *_entry_columns(entries),
        )

    async def create_tasks(
        self,
        conn: Conn,
        *,
        tenant_id: str,
        tasks: Sequence[NewTaskRow],
        entries: Sequence[QueueEntry],
        entry_workflow_ids: Sequence[str],
        events: Sequence[TaskEvent],
    ) -> None:
        """New tasks of existing runs, the queue items of those queued (with each one's
        workflow, for its paused flag) and their first events, in one round trip."""
        self.observer.task_events(tenant_id, events)
        await conn.execute(
            query("create_tasks"),
            tenant_id,
            *_task_columns(tasks),
            *_entry_columns(entries),
            list(entry_workflow_ids),
            *_event_columns(events),
        )

    async def insert_task_events(
        self, conn: Conn, *, tenant_id: str, events: Sequence[TaskEvent]
    ) -> None:
        if not events:
            return
        self.observer.task_events(tenant_id, events)
        await conn.execute(
            query("insert_task_events"),
            tenant_id,
            *_event_columns(events),
        )

    async def claim_queue_items(
        self,
        conn: Conn,
        *,
        tenant_id: str,
        limits: dict[str, int],
        local_workers: Sequence[str] = (),
        exclude: Sequence[int] = (),
        soft_pin_seconds: float = 2.0,
        only_tasks: Sequence[str] | None = None,
    ) -> list[Record]:
        # inside generic_plan_transaction (the scheduler's round): queries/planning.sql
        rows = await conn.fetch(
            query("claim_queue_items"),
            tenant_id,
            list(limits.keys()),
            list(limits.values()),
            list(local_workers),
            list(exclude),
            soft_pin_seconds,
            None if only_tasks is None else list(only_tasks),
        )
        return list(rows)

    async def assign_tasks(
        self, conn: Conn, *, queue_ids: Sequence[int], worker_ids: Sequence[str]
    ) -> list[Record]:
        return list(await conn.fetch(query("assign_tasks"), list(queue_ids), list(worker_ids)))

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
        # The queue item first, then the task: the scheduler claims in that order (claim
        # locks the item, assignment updates the task), and the opposite order deadlocked a
        # bulk cancel against a claim. A claim in flight is waited for; its task is then
        # RUNNING and cancelled as such.
        await conn.execute(query("lock_task_queue_item"), task_id)
        return list(await conn.fetch(query("cancel_task"), tenant_id, task_id))

    async def parent_context(self, *, tenant_id: str, task_id: str) -> Record | None:
        return await self.pool.fetchrow(query("parent_context"), tenant_id, task_id)

    async def run_priority(self, conn: Conn, run_id: str) -> Record | None:
        return await conn.fetchrow(query("run_priority"), run_id)

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

    async def active_tasks_for_ids(
        self, *, tenant_id: str, ids: Sequence[str], conn: Conn | None = None
    ) -> list[str]:
        rows = await (conn or self.pool).fetch(query("active_tasks_for_ids"), tenant_id, list(ids))
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

    # -- batched outcomes ---------------------------------------------------------------------

    async def complete_tasks(
        self,
        conn: Conn,
        *,
        task_ids: Sequence[str],
        retry_counts: Sequence[int],
        outputs: Sequence[str],
        tenant_ids: Sequence[str],
        reporters: Sequence[str | None],
    ) -> list[Record]:
        """The attempts that completed; a single-task run finishes with its task here
        (``run_finished`` true), a DAG's run is left to the caller."""
        rows = await conn.fetch(
            query("complete_tasks"),
            list(task_ids),
            list(retry_counts),
            list(outputs),
            list(tenant_ids),
            list(reporters),
        )
        self._observe_durations([r for r in rows if r["run_finished"]])
        # the statement writes the COMPLETED task events itself: count them like
        # insert_task_events does, or the succeeded-tasks metrics would miss every completion
        by_tenant: dict[str, list[TaskEvent]] = {}
        for r in rows:
            by_tenant.setdefault(str(r["tenant_id"]), []).append(
                TaskEvent(str(r["id"]), str(r["workflow_run_id"]), r["retry_count"], "COMPLETED")
            )
        for tenant_id, events in by_tenant.items():
            self.observer.task_events(tenant_id, events)
        return list(rows)

    async def start_tasks(
        self,
        *,
        task_ids: Sequence[str],
        retry_counts: Sequence[int],
        tenant_ids: Sequence[str],
    ) -> list[Record]:
        return list(
            await self.pool.fetch(
                query("start_tasks"), list(task_ids), list(retry_counts), list(tenant_ids)
            )
        )

    async def create_runs(
        self,
        *,
        tenant_id: str,
        runs: Sequence[NewRun],
        tasks: Sequence[NewTaskRow],
        notify_channel: str,
        notify_payload: str,
    ) -> bool:
        """Runs without dedupe keys and their queued first tasks, in one round trip. False:
        nothing was written, because a run names a version that is not its workflow's
        latest any more, or a deleted workflow (the caller looks them up again)."""
        workflow_of_run = {r.id: r.workflow_id for r in runs}
        current: bool = await self.pool.fetchval(
            query("create_runs"),
            tenant_id,
            [r.workflow_id for r in runs],
            [r.id for r in runs],
            [r.version_id for r in runs],
            [r.input_json for r in runs],
            [r.metadata_json for r in runs],
            [r.priority for r in runs],
            [r.desired_worker_id for r in runs],
            [r.event_id for r in runs],
            [r.event_key for r in runs],
            [t.id for t in tasks],
            [t.run_id for t in tasks],
            [t.task.step.id for t in tasks],
            [t.task.step.readable_id for t in tasks],
            [t.task.step.action_id for t in tasks],
            [t.priority for t in tasks],
            [json.dumps(t.task.payload_extra) for t in tasks],
            [json.dumps(t.task.step.slot_requests) for t in tasks],
            [t.task.step.timeout_seconds for t in tasks],
            [t.desired_worker_id for t in tasks],
            [t.task.step.schedule_timeout_seconds for t in tasks],
            [workflow_of_run[t.run_id] for t in tasks],
            notify_channel,
            notify_payload,
            [r.desired_worker_labels for r in runs],
            column=4,
        )
        if current:
            # the statement writes the QUEUED task events itself (see complete_tasks)
            self.observer.task_events(
                tenant_id, [TaskEvent(t.id, t.run_id, 0, "QUEUED") for t in tasks]
            )
        return current

    async def lock_runs(self, conn: Conn, run_ids: Sequence[str]) -> dict[str, Record]:
        rows = await conn.fetch(query("lock_runs"), sorted(set(run_ids)))
        return {str(r["id"]): r for r in rows}

    async def run_task_snapshots(
        self, conn: Conn, run_ids: Sequence[str]
    ) -> dict[str, list[TaskSnapshot]]:
        rows = await conn.fetch(query("run_task_snapshots"), list(run_ids))
        return _snapshots(run_ids, rows)

    async def run_states(
        self, conn: Conn, run_ids: Sequence[str]
    ) -> tuple[dict[str, Record], dict[str, list[TaskSnapshot]]]:
        """Runs the caller has locked, read with their tasks in one round trip: a row of
        each run (its ``run_*`` columns, as ``lock_runs`` returns them) and its tasks."""
        rows = await conn.fetch(query("run_states"), list(run_ids))
        return {str(r["workflow_run_id"]): r for r in rows}, _snapshots(run_ids, rows)

    async def set_runs_status(
        self,
        conn: Conn,
        *,
        run_ids: Sequence[str],
        statuses: Sequence[TaskStatus],
        finished: Sequence[bool],
    ) -> None:
        finished_rows = await conn.fetch(
            query("set_runs_status"),
            list(run_ids),
            [s.value for s in statuses],
            list(finished),
        )
        self._observe_durations(finished_rows)

    async def worker_capacity(
        self,
        *,
        tenant_id: str,
        worker_ids: Sequence[str],
        action_ids: Sequence[str],
        ready_only: bool,
        heartbeat_window: float,
    ) -> list[Record]:
        """The workers among ``worker_ids`` that serve one of ``action_ids`` (``ready_only``:
        one with a ready queue item), with their state and held slot units."""
        return list(
            await self.pool.fetch(
                query("worker_capacity"),
                tenant_id,
                list(worker_ids),
                list(action_ids),
                ready_only,
                heartbeat_window,
            )
        )

    def _observe_durations(self, rows: Sequence[Record]) -> None:
        """Feed finished runs to the workflow-duration histogram (DAGs and single tasks)."""
        for row in rows:
            self.observer.run_finished(
                str(row["tenant_id"]), row["workflow_name"], row["status"], row["duration_ms"]
            )


def _snapshots(run_ids: Sequence[str], rows: Sequence[Record]) -> dict[str, list[TaskSnapshot]]:
    snapshots: dict[str, list[TaskSnapshot]] = {rid: [] for rid in run_ids}
    for r in rows:
        snapshots.setdefault(str(r["workflow_run_id"]), []).append(
            TaskSnapshot(
                id=str(r["id"]),
                step_id=str(r["step_id"]),
                readable_id=r["readable_id"],
                status=TaskStatus(r["status"]),
                output=r["output"],
                error=r["error"],
                is_skipped=r["is_skipped"],
                worker_id=None if r["worker_id"] is None else str(r["worker_id"]),
            )
        )
    return snapshots


# The parameters of each kind of row, in the order of the unnest(...) that reads them in
# insert_tasks / insert_queue_items / insert_task_events and in create_tasks.


def _task_columns(tasks: Sequence[NewTaskRow]) -> list[list[Any]]:
    return [
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
    ]


def _entry_columns(entries: Sequence[QueueEntry]) -> list[list[Any]]:
    return [
        [e.task_id for e in entries],
        [e.retry_count for e in entries],
        [e.action_id for e in entries],
        [e.priority for e in entries],
        [json.dumps(e.slot_requests) for e in entries],
        [e.desired_worker_id for e in entries],
        [e.delay_seconds for e in entries],
        [e.schedule_timeout_seconds for e in entries],
        [e.rate_limits for e in entries],
    ]


def _event_columns(events: Sequence[TaskEvent]) -> list[list[Any]]:
    return [
        [e.task_id for e in events],
        [e.run_id for e in events],
        [e.retry_count for e in events],
        [e.event_type for e in events],
        [e.message for e in events],
        [e.output for e in events],
        [e.worker_id for e in events],
    ]
