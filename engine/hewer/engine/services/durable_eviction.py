"""Eviction, restore and branching of durable tasks: the part of ``DurableLog``
(``services/durable.py``) that moves a task between its worker, ``EVICTED`` and the queue, or
resets its log from a node, rather than writing nodes.

An evicted task holds no slot and no deadline; it is queued again (keeping its place) when
what its current branch waits for is satisfied, or on request (REST restore,
``RestoreEvictedTask``). Waits left on an abandoned branch neither restore it nor keep it
evicted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from hewer.engine.core import durable as log_rules
from hewer.engine.core.durable import branch_holding
from hewer.engine.core.model import TaskStatus
from hewer.engine.db.repository import Conn, Record, Repository
from hewer.engine.services.bus import Bus
from hewer.engine.services.enqueue import Enqueue, Enqueuer
from hewer.engine.services.task_messages import opt, record_task_event


class DurableRequestError(ValueError):
    """A durable request the engine refuses; the message says why."""


class DurableTaskNotFound(DurableRequestError):
    """The named task does not exist in this tenant."""


async def lock_durable_task(
    repo: Repository, conn: Conn, *, tenant_id: str, task_id: str
) -> Record:
    """The tenant's durable task, locked for this transaction; raises when the task does
    not exist or is not durable."""
    task = await repo.lock_durable_task(conn, task_id=task_id, tenant_id=tenant_id)
    if task is None:
        raise DurableTaskNotFound(f"task {task_id} not found")
    if not task["is_durable"]:
        raise DurableRequestError(f"task {task_id} is not a durable task")
    return task


class EvictionAndBranching:
    """Mixed into ``DurableLog``, which sets these attributes."""

    _repo: Repository
    _bus: Bus
    _enqueuer: Enqueuer

    # -- eviction, restore, branching ----------------------------------------------------

    async def evict(
        self, *, tenant_id: str, worker_id: str, task_id: str, invocation: int, reason: str
    ) -> None:
        """The worker stopped waiting for this invocation: free its slot; restore it when
        what it waits for is satisfied (at once if that happened already)."""
        async with self._repo.transaction() as conn:
            task = await self._repo.lock_durable_task(conn, task_id=task_id, tenant_id=tenant_id)
            if task is None:
                raise DurableTaskNotFound(f"task {task_id} not found")
            holder = opt(task["worker_id"])
            if (
                task["status"] == TaskStatus.RUNNING.value
                and int(task["invocation_count"]) == invocation
                and holder != worker_id
            ):
                # a repeated or stale eviction is answered quietly below; this one would
                # take the running invocation away from the worker that holds it
                raise DurableRequestError(f"task {task_id} is not held by worker {worker_id}")
            row = await self._repo.evict_durable_task(
                conn, task_id=task_id, invocation=invocation, worker_id=holder
            )
            if row is None:
                return  # already evicted, or an older invocation: nothing runs it here
            await record_task_event(
                self._repo,
                conn,
                tenant_id=tenant_id,
                row=row,
                event_type="DURABLE_EVICTED",
                message=reason or "evicted by its worker while waiting",
                worker_id=worker_id,
            )
            if task["worker_id"] is not None:
                await self._bus.publish(conn, {"t": "slots", "worker": str(task["worker_id"])})
            if not await self._pending_waits(conn, tenant_id, task_id):
                await self._restore_locked(conn, tenant_id, task_id, why="its wait was satisfied")

    async def restore(self, *, tenant_id: str, task_id: str) -> bool:
        """Queue an evicted task again (idempotent: False when it is queued or running)."""
        async with self._repo.transaction() as conn:
            task = await lock_durable_task(self._repo, conn, tenant_id=tenant_id, task_id=task_id)
            status = TaskStatus(task["status"])
            if status.is_final:
                raise DurableRequestError(
                    f"task {task_id} is {status.value}; only an evicted task can be restored"
                )
            return await self._restore_locked(conn, tenant_id, task_id, why="restored")

    async def restore_locked(self, conn: Conn, *, tenant_id: str, task_id: str) -> bool:
        """Restore from inside a transaction that holds the task (a wait just satisfied)."""
        return await self._restore_locked(conn, tenant_id, task_id, why="its wait was satisfied")

    async def _restore_locked(self, conn: Conn, tenant_id: str, task_id: str, *, why: str) -> bool:
        row = await self._repo.restore_evicted_task(conn, task_id)
        if row is None:
            return False
        extra = row["payload_extra"]
        parents = (json.loads(extra) if isinstance(extra, str) else dict(extra or {})).get(
            "parents", {}
        )
        await self._enqueuer.enqueue(
            conn,
            tenant_id=tenant_id,
            items=[
                Enqueue(
                    task_id=task_id,
                    run_id=str(row["workflow_run_id"]),
                    retry_count=int(row["retry_count"]),
                    version_id=str(row["workflow_version_id"]),
                    step_id=str(row["step_id"]),
                    priority=int(row["priority"]),
                    desired_worker_id=opt(row["desired_worker_id"]),
                    requeued=True,
                    keep_queue_position=True,
                    parents=parents,
                    admitted=True,
                )
            ],
        )
        await record_task_event(
            self._repo,
            conn,
            tenant_id=tenant_id,
            row=row,
            event_type="DURABLE_RESTORING",
            message=f"durable task {why}",
        )
        await self._bus.publish(conn, {"t": "queue", "tenant": tenant_id, "delay": 0})
        return True

    async def branch(self, *, tenant_id: str, task_id: str, node_id: int, branch_id: int) -> int:
        """A new branch starting at ``node_id`` of ``branch_id``; returns its id. The
        caller replays the task, which re-executes from that node."""
        if node_id < 1 or branch_id < 1:
            raise DurableRequestError("node_id and branch_id must be positive")
        async with self._repo.transaction() as conn:
            task = await lock_durable_task(self._repo, conn, tenant_id=tenant_id, task_id=task_id)
            status = TaskStatus(task["status"])
            if not (status.is_final or status is TaskStatus.EVICTED):
                # the replay that follows refuses an active task (it would run twice), and
                # the invocation still running would write its next nodes to the new branch
                raise DurableRequestError(
                    f"task {task_id} is {status.value}; only a finished or evicted durable "
                    "task can be reset from a node"
                )
            branches = await self._repo.durable_branches(conn, task_id)
            if branch_id != log_rules.ROOT_BRANCH and branch_id not in branches:
                raise DurableRequestError(f"task {task_id} has no branch {branch_id}")
            holder = branch_holding(branches, current=branch_id, node_id=node_id)
            if not await self._repo.durable_entry_exists(
                conn, task_id=task_id, branch_id=holder, node_id=node_id
            ):
                raise DurableRequestError(
                    f"node {node_id} does not exist on branch {branch_id} of task {task_id}"
                )
            return await self._repo.create_durable_branch(
                conn,
                task_id=task_id,
                tenant_id=tenant_id,
                parent_branch_id=branch_id,
                node_id=node_id,
            )

    # -- what the current branch reads ------------------------------------------------------

    async def _pending_waits(self, conn: Conn, tenant_id: str, task_id: str) -> bool:
        """Whether the task's log (its current branch) still waits for a node: waits left
        behind on an abandoned branch never restore the task, nor keep it evicted."""
        pending = await self._repo.pending_durable_nodes(conn, task_id)
        return bool(pending) and bool(await self._reads(conn, tenant_id, task_id, pending))

    async def _reads(
        self, conn: Conn, tenant_id: str, task_id: str, nodes: Sequence[tuple[int, int]]
    ) -> list[tuple[int, int]]:
        """The ``(branch, node)`` among ``nodes`` that the task's current branch reads."""
        state = await self._repo.durable_delivery_state(conn, task_id=task_id, tenant_id=tenant_id)
        if state is None:
            return []
        branches = await self._repo.durable_branches(conn, task_id)
        if not branches:
            return [n for n in nodes if n[0] == log_rules.ROOT_BRANCH]
        logged = await self._repo.durable_log_nodes(conn, task_id)
        current = int(state["branch_id"])
        return [
            n for n in nodes if log_rules.is_visible(n, branches, current=current, logged=logged)
        ]
