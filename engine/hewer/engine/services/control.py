"""Operator actions on runs and workers: cancel, replay, trigger, pause.

This is the mutation surface the REST API (and later the operator) calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hewer.engine.core.model import StepKind, TaskStatus, WorkflowVersionDef
from hewer.engine.core.placement import desired_worker
from hewer.engine.db.repository import Conn, Repository, TaskEvent
from hewer.engine.services.bus import Bus
from hewer.engine.services.definitions import Definitions
from hewer.engine.services.durable import DurableLog, DurableRequestError
from hewer.engine.services.enqueue import Enqueue, Enqueuer
from hewer.engine.services.lifecycle import Lifecycle
from hewer.engine.services.task_messages import opt
from hewer.engine.services.triggers import (
    IdempotencyCollision,
    TriggerError,
    TriggerRequest,
    Triggers,
)


class RunControl:
    def __init__(
        self,
        *,
        repo: Repository,
        bus: Bus,
        definitions: Definitions,
        lifecycle: Lifecycle,
        triggers: Triggers,
        enqueuer: Enqueuer,
    ) -> None:
        self._enqueuer = enqueuer
        self._repo = repo
        self._bus = bus
        self._defs = definitions
        self._lifecycle = lifecycle
        self._triggers = triggers
        # durable tasks' restore and branching (services/durable.py); set by the server
        self.durable: DurableLog | None = None

    async def cancel(
        self,
        *,
        tenant_id: str,
        external_ids: Sequence[str],
        reason: str = "cancelled by request",
        conn: Conn | None = None,
    ) -> list[str]:
        """Cancel the active tasks of the named runs or tasks (``conn``: in that transaction)."""
        task_ids = await self._repo.active_tasks_for_ids(
            tenant_id=tenant_id, ids=external_ids, conn=conn
        )
        return await self._lifecycle.cancel(
            tenant_id=tenant_id, task_ids=task_ids, reason=reason, conn=conn
        )

    async def trigger(
        self,
        *,
        tenant_id: str,
        workflow_name: str,
        input: dict[str, Any],
        additional_metadata: dict[str, Any],
        priority: int | None,
    ) -> str:
        try:
            ids = await self._triggers.trigger(
                tenant_id=tenant_id,
                requests=[
                    TriggerRequest(
                        workflow_name=workflow_name,
                        input=input,
                        additional_metadata=additional_metadata,
                        priority=priority,
                    )
                ],
            )
        except IdempotencyCollision:
            raise  # REST answers 409 naming the run that holds the key
        except TriggerError as exc:
            raise ValueError(str(exc)) from None
        return ids[0]

    async def set_worker_paused(self, *, tenant_id: str, worker_id: str, paused: bool) -> bool:
        changed = await self._repo.set_worker_paused(
            tenant_id=tenant_id, worker_id=worker_id, paused=paused
        )
        if changed and not paused:
            await self._bus.publish(None, {"t": "slots", "worker": worker_id})
        return changed

    async def restore(self, *, tenant_id: str, task_id: str) -> bool:
        """Queue an evicted durable task again; False when it was not evicted (idempotent)."""
        if self.durable is None:
            raise DurableRequestError("durable tasks are not available")
        return await self.durable.restore(tenant_id=tenant_id, task_id=task_id)

    async def branch_durable_task(
        self, *, tenant_id: str, task_id: str, node_id: int, branch_id: int
    ) -> int:
        """Reset a durable task from a node: a new branch from ``(branch_id, node_id)``,
        then a replay that re-executes the log from that node; returns the new branch."""
        if self.durable is None:
            raise DurableRequestError("durable tasks are not available")
        new_branch = await self.durable.branch(
            tenant_id=tenant_id, task_id=task_id, node_id=node_id, branch_id=branch_id
        )
        await self.replay(tenant_id=tenant_id, external_ids=[task_id])
        return new_branch

    async def replay(self, *, tenant_id: str, external_ids: Sequence[str]) -> list[str]:
        """Run finished tasks again (attempt + 1); the tasks after them are recreated.

        A run id replays the whole run from its roots; a task id replays that task and
        everything downstream of it. Child runs spawned earlier are reused, not recreated.
        """
        targets = await self._repo.replay_targets(tenant_id=tenant_id, ids=external_ids)
        wanted: dict[str, tuple[str, set[str] | None]] = {}
        for row in targets:
            run_id = str(row["run_id"])
            version_id = str(row["workflow_version_id"])
            whole_run = run_id in external_ids or row["task_id"] is None
            _, tasks = wanted.get(run_id, (version_id, set()))
            if whole_run or tasks is None:
                wanted[run_id] = (version_id, None)
            else:
                tasks.add(str(row["task_id"]))
                wanted[run_id] = (version_id, tasks)
        replayed: list[str] = []
        for run_id, (version_id, task_ids) in wanted.items():
            replayed += await self._replay_run(
                tenant_id=tenant_id, run_id=run_id, version_id=version_id, task_ids=task_ids
            )
        return replayed

    async def _replay_run(
        self, *, tenant_id: str, run_id: str, version_id: str, task_ids: set[str] | None
    ) -> list[str]:
        version = await self._defs.version(version_id)
        async with self._repo.transaction() as conn:
            run = (await self._repo.lock_runs(conn, [run_id])).get(run_id)
            if run is None:
                return []
            snapshot = (await self._repo.run_task_snapshots(conn, [run_id]))[run_id]
            if task_ids is None:
                start = {s.readable_id for s in version.roots}
            else:
                start = {t.readable_id for t in snapshot if t.id in task_ids}
            downstream = _downstream(version, start)
            if any(t.readable_id in start and not _replayable(t.status) for t in snapshot):
                return []  # replaying a task that is still active would run it twice
            await self._repo.delete_tasks(
                conn, [t.id for t in snapshot if t.readable_id in downstream]
            )
            reset = []
            for task in snapshot:
                if task.readable_id in start:
                    row = await self._repo.reset_task(conn, task.id)
                    if row is not None:
                        reset.append(row)
            if not reset:
                return []
            await self._repo.set_runs_status(
                conn, run_ids=[run_id], statuses=[TaskStatus.QUEUED], finished=[False]
            )
            await self._enqueuer.enqueue(
                conn,
                tenant_id=tenant_id,
                items=[
                    Enqueue(
                        task_id=str(r["id"]),
                        run_id=run_id,
                        retry_count=r["retry_count"],
                        version_id=version.id,
                        step_id=str(r["step_id"]),
                        priority=r["priority"],
                        # a replayed task of a sticky DAG wants its first parent's worker
                        desired_worker_id=desired_worker(
                            version=version,
                            tasks=snapshot,
                            readable_id=version.step_by_id(str(r["step_id"])).readable_id,
                            run_desired=opt(run["desired_worker_id"]),
                        ),
                    )
                    for r in reset
                ],
            )
            await self._repo.insert_task_events(
                conn,
                tenant_id=tenant_id,
                events=[
                    TaskEvent(
                        task_id=str(r["id"]),
                        run_id=run_id,
                        retry_count=r["retry_count"],
                        event_type="QUEUED",
                        message="replayed",
                    )
                    for r in reset
                ],
            )
            await self._bus.publish(conn, {"t": "queue", "tenant": tenant_id, "delay": 0})
        return [str(r["id"]) for r in reset]


def _replayable(status: TaskStatus) -> bool:
    # an evicted durable task runs nowhere: a replay starts a new invocation of its log
    return status.is_final or status is TaskStatus.EVICTED


def _downstream(version: WorkflowVersionDef, start: set[str]) -> set[str]:
    """Steps after ``start`` (not including it), plus the on-failure step."""
    found: set[str] = set()
    frontier = set(start)
    while frontier:
        children = {
            s.readable_id
            for s in version.steps
            if s.kind is StepKind.TASK and frontier & set(s.parents)
        }
        frontier = children - found - start
        found |= frontier
    if version.on_failure is not None:
        found.add(version.on_failure.readable_id)
    return found - start
