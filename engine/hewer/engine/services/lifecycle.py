"""Task outcomes: completion, failure and retry, cancellation.

Every outcome is one transaction: the attempt's row changes only if that attempt is still
the running one (late reports of older attempts change nothing), then the run advances in
the same transaction (children created, on-failure queued, run finished:
services/progression.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hewer.engine.core.model import TaskStatus
from hewer.engine.core.placement import desired_worker
from hewer.engine.core.retry import decide_retry
from hewer.engine.db.repository import Conn, NewTaskRow, Record, Repository
from hewer.engine.services.batching import Batcher, Repeats
from hewer.engine.services.bus import Bus
from hewer.engine.services.definitions import Definitions
from hewer.engine.services.enqueue import Enqueue, Enqueuer
from hewer.engine.services.progression import Finished, Progression
from hewer.engine.services.scheduler import Dispatch, Scheduler
from hewer.engine.services.task_messages import (
    cancel_message,
    finished_task_messages,
    inline_run_result,
    opt,
    run_event,
    stale_message,
    task_event,
)

log = logging.getLogger(__name__)


class TaskNotFound(LookupError):
    pass


class StaleAttempt(Exception):
    """A report for an attempt that is not running (finished, cancelled or retried)."""


class NotHolder(Exception):
    """A worker reported on an attempt that another worker holds."""


@dataclass(frozen=True, slots=True)
class _Report:
    tenant_id: str
    task_id: str
    retry_count: int
    payload: str
    reporter: str | None


class Lifecycle:
    def __init__(
        self, *, repo: Repository, bus: Bus, definitions: Definitions, enqueuer: Enqueuer
    ) -> None:
        self._repo = repo
        self._bus = bus
        self._defs = definitions
        self._enqueuer = enqueuer
        self._starts: Batcher[_Report, None] = Batcher(self._write_starts, name="starts")
        # more than the attempts starting on one replica in the moments between an
        # attempt's two start reports
        self._start_repeats: Repeats[tuple[str, str, int]] = Repeats(size=4096)
        self._completions: Batcher[_Report, None] = Batcher(
            self._write_completions, name="completions"
        )
        # what follows in a run once its tasks finished (its look-back satisfier is set by
        # the server)
        self.progression = Progression(
            repo=repo, bus=bus, definitions=definitions, enqueuer=enqueuer
        )
        # assigns the tasks a completion queued in its own transaction (DAG hops); set by the
        # server
        self.scheduler: Scheduler | None = None

    # -- reports from workers --------------------------------------------------------------

    async def started(self, *, tenant_id: str, task_id: str, retry_count: int) -> None:
        """Record that the worker began the attempt (idempotent: the SDK reports it twice,
        and its second report is answered from memory)."""
        report = _Report(tenant_id, task_id, retry_count, "", None)
        await self._start_repeats.once(
            (tenant_id, task_id, retry_count), lambda: self._starts.submit(report)
        )

    async def completed(
        self,
        *,
        tenant_id: str,
        task_id: str,
        retry_count: int,
        output: str,
        reporter: str | None = None,
    ) -> None:
        """Complete the running attempt; ``reporter`` (a worker id) must be its holder.

        Concurrent completions are written together (see :mod:`batching`).
        """
        await self._completions.submit(_Report(tenant_id, task_id, retry_count, output, reporter))

    async def _write_starts(self, reports: list[_Report]) -> list[BaseException | None]:
        rows = await self._repo.start_tasks(
            task_ids=[r.task_id for r in reports],
            retry_counts=[r.retry_count for r in reports],
            tenant_ids=[r.tenant_id for r in reports],
        )
        known = {str(r["id"]) for r in rows}
        first = [r for r in rows if r["first"]]
        if first:
            events = [
                run_event(r, "STARTED", retry_count=r["retry_count"], payload="") for r in first
            ]
            await self._bus.publish(None, {"t": "multi", "m": events})
        return [
            None if r.task_id in known else TaskNotFound(f"task {r.task_id} not found")
            for r in reports
        ]

    async def _write_completions(self, reports: list[_Report]) -> list[BaseException | None]:
        messages: list[dict[str, Any]] = []
        dispatch: Dispatch | None = None
        try:
            # generic plans: its statements take them anyway after their first five calls,
            # and the claim of an assignment in it (_assign_queued) would be planned anew on
            # every call (queries/planning.sql)
            async with self._repo.generic_plan_transaction() as conn:
                rows = await self._repo.complete_tasks(
                    conn,
                    task_ids=[r.task_id for r in reports],
                    retry_counts=[r.retry_count for r in reports],
                    outputs=[r.payload for r in reports],
                    tenant_ids=[r.tenant_id for r in reports],
                    reporters=[r.reporter for r in reports],
                )
                done = {str(r["id"]) for r in rows}
                outputs = {r.task_id: r.payload for r in reports}
                outcomes: list[BaseException | None] = []
                for report in reports:
                    if report.task_id in done:
                        outcomes.append(None)
                    else:
                        outcomes.append(await self._diagnose(conn, report))
                # single-task runs finished in the same statement; their results are known
                # here, so this replica's result subscribers are answered without reading them
                local_results: dict[str, dict[str, Any]] = {}
                in_dags: list[Finished] = []
                for row in rows:
                    output = outputs[str(row["id"])]
                    if row["run_finished"]:
                        run_id = str(row["workflow_run_id"])
                        messages += finished_task_messages(
                            row, TaskStatus.COMPLETED, payload=output
                        )
                        messages.append({"t": "run", "run": run_id, "status": "COMPLETED"})
                        local_results[run_id] = inline_run_result(row, output=output)
                    else:
                        in_dags.append(Finished(row, TaskStatus.COMPLETED, output))
                if in_dags:  # complete_tasks locked their runs; publishes its messages itself
                    queued: dict[str, list[NewTaskRow]] = {}
                    messages = await self.progression.advance(
                        conn, in_dags, locked=True, also=messages, echoed=True, queued=queued
                    )
                    dispatch = await self._assign_queued(conn, queued)
                elif messages:
                    await self._bus.publish(conn, {"t": "multi", "m": messages}, echoed=True)
        except BaseException:
            if dispatch is not None:
                await self._end_dispatch(dispatch, committed=False)
            raise
        if dispatch is not None:
            await self._end_dispatch(dispatch, committed=True)
        if messages:
            echo = [
                {**m, **local_results[m["run"]]}
                if m["t"] == "run" and m["run"] in local_results
                else m
                for m in messages
            ]
            self._bus.echo_locally({"t": "multi", "m": echo})
        return outcomes

    async def _assign_queued(
        self, conn: Conn, queued: dict[str, list[NewTaskRow]]
    ) -> Dispatch | None:
        """The DAG hop's last step, in its transaction: the tasks it queued (per tenant)
        are assigned to this replica's workers now when nothing older waits
        (Scheduler.assign_within), not by the scheduler round its wake-up would start after
        the commit. One tenant's at most: the assign lock is the scheduler's, held until the
        commit."""
        if self.scheduler is None:
            return None
        for tenant_id, rows in queued.items():
            dispatch = await self.scheduler.assign_within(
                conn,
                tenant_id=tenant_id,
                task_ids=[r.id for r in rows],
                action_ids=sorted({r.task.step.action_id for r in rows}),
            )
            if dispatch is not None:
                return dispatch
        return None

    async def _end_dispatch(self, dispatch: Dispatch, *, committed: bool) -> None:
        assert self.scheduler is not None
        await self.scheduler.end_dispatch(dispatch, committed=committed)

    async def _diagnose(self, conn: Conn, report: _Report) -> BaseException | None:
        task = await self._repo.get_task(report.task_id, tenant_id=report.tenant_id, conn=conn)
        if task is None:
            return TaskNotFound(f"task {report.task_id} not found")
        holder = opt(task["worker_id"])
        if (
            report.reporter is not None
            and holder is not None
            and holder != report.reporter
            and task["retry_count"] == report.retry_count
            and task["status"] == TaskStatus.RUNNING.value
        ):
            return NotHolder(
                f"task {report.task_id} attempt {report.retry_count} is held by another worker"
            )
        return StaleAttempt(stale_message(task, report.retry_count))

    async def failed(
        self,
        *,
        tenant_id: str,
        task_id: str,
        retry_count: int,
        error: str,
        non_retryable: bool = False,
        event_type: str = "FAILED",
        cancel_on_worker: bool = False,
    ) -> None:
        """An attempt failed (app error or timeout): retry it or fail it for good.

        ``cancel_on_worker`` sends the worker a cancel for the attempt (timeouts: the
        worker may still be running it).
        """
        async with self._repo.transaction() as conn:
            task = await self._repo.get_task(task_id, tenant_id=tenant_id, conn=conn)
            if task is None:
                raise TaskNotFound(f"task {task_id} not found")
            version = await self._defs.version(str(task["workflow_version_id"]), conn=conn)
            step = version.step_by_id(str(task["step_id"]))
            decision = decide_retry(
                retries=step.retries,
                app_retry_count=task["app_retry_count"],
                non_retryable=non_retryable,
                backoff_factor=step.backoff_factor,
                backoff_max_seconds=step.backoff_max_seconds,
            )
            if decision.retry:
                row = await self._repo.requeue_task(
                    conn, task_id=task_id, retry_count=retry_count, app_failure=True, error=error
                )
                if row is None:
                    raise StaleAttempt(stale_message(task, retry_count))
                await self._queue_retry(
                    conn,
                    row,
                    version_id=str(task["workflow_version_id"]),
                    previous_worker=opt(task["worker_id"]),
                    delay=decision.delay_seconds,
                )
                if cancel_on_worker and task["worker_id"]:
                    await self._bus.publish(conn, cancel_message(task, retry_count=retry_count))
                await self._repo.insert_task_events(
                    conn,
                    tenant_id=tenant_id,
                    events=[
                        task_event(row, event_type, message=error, retry_count=retry_count),
                        task_event(row, "RETRYING", message=error),
                    ],
                )
                return
            row = await self._finish_attempt(
                conn,
                tenant_id=tenant_id,
                task_id=task_id,
                retry_count=retry_count,
                status=TaskStatus.FAILED,
                output=None,
                error=error,
            )
            await self._repo.insert_task_events(
                conn, tenant_id=tenant_id, events=[task_event(row, event_type, message=error)]
            )
            if cancel_on_worker and row["worker_id"]:
                await self._bus.publish(conn, cancel_message(row))
            await self.advance_and_publish(conn, row, status=TaskStatus.FAILED, payload=error)

    async def requeue_lost(
        self, *, tenant_id: str, task_id: str, retry_count: int, reason: str
    ) -> bool:
        """Put back an attempt whose worker is gone (an internal failure: no app retry used)."""
        async with self._repo.transaction() as conn:
            task = await self._repo.get_task(task_id, tenant_id=tenant_id, conn=conn)
            if task is None:
                return False
            row = await self._repo.requeue_task(
                conn, task_id=task_id, retry_count=retry_count, app_failure=False, error=None
            )
            if row is None:
                return False
            await self._queue_retry(
                conn,
                row,
                version_id=str(task["workflow_version_id"]),
                previous_worker=opt(task["worker_id"]),
                delay=0,
                keep_queue_position=True,
            )
            await self._repo.insert_task_events(
                conn,
                tenant_id=tenant_id,
                events=[task_event(row, "REASSIGNED", message=reason, retry_count=retry_count)],
            )
            return True

    async def fail_queued(self, *, tenant_id: str, task_id: str, error: str) -> bool:
        """Fail a task that cannot run, before it ran (a batch group key that does not
        evaluate: services/batches.py); no retry. False if it was no longer queued."""
        async with self._repo.transaction() as conn:
            row = await self._repo.fail_queued_task(
                conn, tenant_id=tenant_id, task_id=task_id, error=error
            )
            if row is None:
                return False
            await self._repo.insert_task_events(
                conn, tenant_id=tenant_id, events=[task_event(row, "FAILED", message=error)]
            )
            await self.advance_and_publish(conn, row, status=TaskStatus.FAILED, payload=error)
            return True

    # -- cancellation ----------------------------------------------------------------------

    async def cancel(
        self,
        *,
        tenant_id: str,
        task_ids: Sequence[str],
        reason: str,
        conn: Conn | None = None,
    ) -> list[str]:
        """Cancel queued or running tasks; running ones get a cancel sent to their worker.

        With ``conn`` every cancellation is part of the caller's transaction (admission
        cancels the losers of a concurrency key in the transaction that admits the winner).
        """
        cancelled: list[str] = []
        for task_id in task_ids:
            async with self._repo.unit(conn) as conn_:
                rows = await self._repo.cancel_task(conn_, tenant_id=tenant_id, task_id=task_id)
                if not rows:
                    continue
                row = rows[0]
                cancelled.append(str(row["id"]))
                await self._repo.insert_task_events(
                    conn_,
                    tenant_id=tenant_id,
                    events=[task_event(row, "CANCELLED", message=reason)],
                )
                if row["previous_status"] == TaskStatus.RUNNING.value and row["worker_id"]:
                    await self._bus.publish(conn_, cancel_message(row))
                await self.advance_and_publish(conn_, row, status=TaskStatus.CANCELLED, payload="")
        return cancelled

    # -- internals ---------------------------------------------------------------------------

    async def _finish_attempt(
        self,
        conn: Conn,
        *,
        tenant_id: str,
        task_id: str,
        retry_count: int,
        status: TaskStatus,
        output: str | None,
        error: str | None,
    ) -> Record:
        row = await self._repo.finish_task(
            conn,
            task_id=task_id,
            retry_count=retry_count,
            status=status,
            output=output,
            error=error,
        )
        if row is None or str(row["tenant_id"]) != tenant_id:
            task = await self._repo.get_task(task_id, tenant_id=tenant_id, conn=conn)
            if task is None:
                raise TaskNotFound(f"task {task_id} not found")
            raise StaleAttempt(stale_message(task, retry_count))
        return row

    async def _queue_retry(
        self,
        conn: Conn,
        row: Record,
        *,
        version_id: str,
        previous_worker: str | None,
        delay: float,
        keep_queue_position: bool = False,
    ) -> None:
        """Queue the task's next attempt. ``keep_queue_position``: a lost attempt (not a
        retry after a failure) goes back under its previous queue position (fair recovery)."""
        run = await self._repo.run_priority(conn, str(row["workflow_run_id"]))
        desired = None if run is None else opt(run["desired_worker_id"])
        if run is not None:
            version = await self._defs.version(str(run["workflow_version_id"]), conn=conn)
            if version.sticky:  # a sticky DAG task's retry keeps its inherited worker
                run_id = str(row["workflow_run_id"])
                desired = desired_worker(
                    version=version,
                    tasks=(await self._repo.run_task_snapshots(conn, [run_id]))[run_id],
                    readable_id=row["readable_id"],
                    run_desired=desired,
                )
        outcome = await self._enqueuer.enqueue(
            conn,
            tenant_id=str(row["tenant_id"]),
            items=[
                Enqueue(
                    task_id=str(row["id"]),
                    run_id=str(row["workflow_run_id"]),
                    retry_count=row["retry_count"],
                    version_id=version_id,
                    step_id=str(row["step_id"]),
                    priority=row["priority"],
                    desired_worker_id=desired,
                    delay_seconds=delay,
                    requeued=True,
                    keep_queue_position=keep_queue_position,
                )
            ],
        )
        if outcome.failed:
            await self.advance_and_publish(
                conn,
                outcome.failed[0],
                status=TaskStatus.FAILED,
                payload=str(outcome.failed[0]["error"]),
            )
        if previous_worker:
            await self._bus.publish(conn, {"t": "slots", "worker": previous_worker})
        await self._bus.publish(
            conn, {"t": "queue", "tenant": str(row["tenant_id"]), "delay": delay}
        )

    async def advance_and_publish(
        self, conn: Conn, row: Record, *, status: TaskStatus, payload: str
    ) -> None:
        """Progress the run after ``row`` reached ``status`` (a failure, a cancellation, or
        a waiting task skipped by its conditions, services/matches.py); the messages go with
        the caller's COMMIT."""
        await self.progression.advance(conn, [Finished(row, status, payload)])
