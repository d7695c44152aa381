"""Run progression: what follows in a run once some of its tasks reached a final state.

A run is advanced under its row lock (taken here, or by the caller's statement), so two
siblings finishing at once never create a child twice; the decisions themselves are pure
(``core.dag.progress``), and everything they create is written in a fixed number of
statements whatever the number of runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hewer.engine.core.dag import progress
from hewer.engine.core.ids import task_id_for
from hewer.engine.core.model import TaskStatus
from hewer.engine.core.placement import desired_worker
from hewer.engine.db.repository import Conn, NewTaskRow, Record, Repository, TaskEvent
from hewer.engine.services.bus import Bus
from hewer.engine.services.definitions import Definitions
from hewer.engine.services.enqueue import Enqueuer, NewTasks, first_attempts
from hewer.engine.services.task_messages import finished_task_messages, opt
from hewer.engine.services.waiting import (
    CREATED_EVENT,
    LookBackSatisfier,
    MetAlready,
    register_waiting,
    satisfy_met,
)


@dataclass(frozen=True, slots=True)
class Finished:
    """A task that just reached a final state, for DAG progression."""

    row: Record
    status: TaskStatus
    payload: str


@dataclass(frozen=True, slots=True)
class _LockedRun:
    """What DAG progression needs of a run it holds the lock of (a row of ``lock_runs``
    or ``run_states``)."""

    tenant_id: str
    version_id: str
    priority: int
    desired_worker_id: str | None
    status: str
    was_finished: bool

    @classmethod
    def of(cls, row: Record) -> _LockedRun:
        return cls(
            tenant_id=str(row["tenant_id"]),
            version_id=str(row["workflow_version_id"]),
            priority=int(row["priority"]),
            desired_worker_id=opt(row["desired_worker_id"]),
            status=row["run_status"],
            was_finished=row["run_was_finished"],
        )

    def changes(self, *, status: TaskStatus, finished: bool) -> bool:
        """Whether ``set_runs_status`` would write this run (its own condition, known here
        because the run is locked): most progressions of a DAG change nothing."""
        return self.status != status.value or finished or self.was_finished


class Progression:
    def __init__(
        self, *, repo: Repository, bus: Bus, definitions: Definitions, enqueuer: Enqueuer
    ) -> None:
        self._repo = repo
        self._bus = bus
        self._defs = definitions
        self._enqueuer = enqueuer
        # fires what a look-back met for new WAITING tasks (services/matches.py); set by the
        # server
        self.matches: LookBackSatisfier | None = None

    async def advance(
        self,
        conn: Conn,
        finished: list[Finished],
        *,
        locked: bool = False,
        also: Sequence[dict[str, Any]] = (),
        echoed: bool = False,
        queued: dict[str, list[NewTaskRow]] | None = None,
    ) -> list[dict[str, Any]]:
        """After tasks reached a final state: create what follows and maybe finish their
        runs, in a fixed number of statements. Publishes the caller's messages (``also``)
        and its own, and returns them all (for a local echo after the commit; ``echoed``: the
        caller does that echo). ``queued`` receives the tasks it queued, per tenant.

        The runs are locked together (in id order; ``locked``: by the caller already) and
        read together; the DAG decisions are pure (``core.dag.progress``); what
        they create is written with one statement per tenant; the messages go with the
        COMMIT (db/transactions.py).
        """
        messages: list[dict[str, Any]] = []
        for item in finished:
            messages += finished_task_messages(item.row, item.status, payload=item.payload)
        run_ids = sorted({str(item.row["workflow_run_id"]) for item in finished})
        if locked:
            heads, snapshots = await self._repo.run_states(conn, run_ids)
        else:
            heads = await self._repo.lock_runs(conn, run_ids)
            snapshots = await self._repo.run_task_snapshots(conn, run_ids)
        runs = {run_id: _LockedRun.of(row) for run_id, row in heads.items()}
        new_rows: dict[str, list[NewTaskRow]] = {}
        changed: list[str] = []
        statuses: list[TaskStatus] = []
        finished_flags: list[bool] = []
        for run_id in run_ids:
            run = runs[run_id]
            version = await self._defs.version(run.version_id, conn=conn)
            step = progress(version, snapshots[run_id])
            tenant_id = run.tenant_id
            for new in step.new_tasks:
                new_rows.setdefault(tenant_id, []).append(
                    NewTaskRow(
                        id=task_id_for(run_id),
                        run_id=run_id,
                        task=new,
                        priority=run.priority,
                        desired_worker_id=desired_worker(
                            version=version,
                            tasks=snapshots[run_id],
                            readable_id=new.step.readable_id,
                            run_desired=run.desired_worker_id,
                        ),
                    )
                )
            if run.changes(status=step.run_status, finished=step.finished):
                changed.append(run_id)
                statuses.append(step.run_status)
                finished_flags.append(step.finished)
            if step.finished:
                messages.append({"t": "run", "run": run_id, "status": step.run_status.value})
        version_of = {run_id: runs[run_id].version_id for run_id in run_ids}
        for tenant_id, rows in new_rows.items():
            queued_rows = [r for r in rows if r.task.status is TaskStatus.QUEUED]
            if queued_rows:
                messages.append({"t": "queue", "tenant": tenant_id, "delay": 0})
                if queued is not None:
                    queued[tenant_id] = queued_rows
        messages = [*also, *messages]
        unqueued: list[Finished] = []
        met: list[MetAlready] = []
        for tenant_id, rows in new_rows.items():
            failed = await self._create_tasks(
                conn, tenant_id=tenant_id, rows=rows, version_of=version_of, met=met
            )
            unqueued += [Finished(r, TaskStatus.FAILED, str(r["error"])) for r in failed]
        if changed:
            await self._repo.set_runs_status(
                conn, run_ids=changed, statuses=statuses, finished=finished_flags
            )
        # sent with the COMMIT
        await self._bus.publish(conn, {"t": "multi", "m": messages}, echoed=echoed)
        if unqueued:  # children that could not be admitted (a bad concurrency key) failed
            messages += await self.advance(conn, unqueued, echoed=echoed)
        # last: a firing skip or cancel advances these runs again from what is written now
        await satisfy_met(self.matches, conn, met)
        return messages

    async def _create_tasks(
        self,
        conn: Conn,
        *,
        tenant_id: str,
        rows: Sequence[NewTaskRow],
        version_of: dict[str, str],
        met: list[MetAlready],
    ) -> list[Record]:
        """Insert DAG tasks and enqueue the queued ones; returns those that failed instead.
        WAITING ones get their matches; what a look-back met for them is added to ``met``."""
        events = [
            TaskEvent(
                task_id=r.id,
                run_id=r.run_id,
                retry_count=0,
                event_type=CREATED_EVENT.get(r.task.status)
                or ("SKIPPED" if r.task.skipped else r.task.status.value),
            )
            for r in rows
        ]
        # the tasks are written with their queue items and events, in one statement
        outcome = await self._enqueuer.enqueue(
            conn,
            tenant_id=tenant_id,
            items=first_attempts(rows, version_of=version_of),
            creating=NewTasks(tasks=rows, events=events),
        )
        met += await register_waiting(self._repo, conn, tenant_id=tenant_id, rows=rows)
        return outcome.failed
