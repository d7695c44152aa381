"""Durable waits of the pre-eviction API (``RegisterDurableEvent`` and
``ListenForDurableEvent``), which SDKs use against engines older than v0.80.

Such an SDK names each wait by a signal key (``sleep:10s-0``, ``event:order-1``) instead of
asking the engine for log nodes. A signal is a WAIT_FOR node of the task's durable log on
``SIGNAL_BRANCH``, which no invocation reads, with the same match as any durable wait: one
match mechanism serves both APIs, and the first registration of a key fixes its sleep's
wake-up time, so a task that restarts and registers the key again does not sleep anew.
"""

from __future__ import annotations

from collections.abc import Sequence

from hewer.engine.core import durable as log_rules
from hewer.engine.core.conditions import Condition, ConditionKind
from hewer.engine.core.durable import SIGNAL_BRANCH, EntryKind
from hewer.engine.core.model import TaskStatus
from hewer.engine.db.durable_repo import NewEntry
from hewer.engine.db.repository import Repository
from hewer.engine.services.durable import DurableLog, DurableRequestError, DurableTaskNotFound
from hewer.engine.services.durable_eviction import lock_durable_task
from hewer.engine.services.waiting import look_back


class DurableSignals:
    def __init__(self, *, repo: Repository, durable: DurableLog) -> None:
        self._repo = repo
        self._durable = durable

    async def register(
        self,
        *,
        tenant_id: str,
        task_id: str,
        signal_key: str,
        conditions: Sequence[Condition],
    ) -> None:
        if not signal_key:
            raise DurableRequestError("signal_key is empty")
        try:
            log_rules.durable_conditions(conditions)
        except ValueError as exc:
            raise DurableRequestError(str(exc)) from None
        matches = self._durable.matches
        async with self._repo.transaction() as conn:
            task = await lock_durable_task(self._repo, conn, tenant_id=tenant_id, task_id=task_id)
            if task["status"] != TaskStatus.RUNNING.value:
                raise DurableRequestError(f"task {task_id} is {task['status']}, not running")
            wanted = log_rules.wait_key(conditions)
            existing = await self._repo.durable_signal(conn, task_id=task_id, signal_key=signal_key)
            if existing is not None:
                return  # registered before this restart: its wait (and wake-up time) stands
            node_id = await self._repo.next_signal_node(conn, task_id)
            await self._repo.insert_durable_entries(
                conn,
                task_id=task_id,
                tenant_id=tenant_id,
                entries=[
                    NewEntry(SIGNAL_BRANCH, node_id, EntryKind.WAIT_FOR.value, wanted, signal_key)
                ],
            )
            match_id = await self._repo.insert_durable_match(
                conn,
                tenant_id=tenant_id,
                task_id=task_id,
                branch_id=SIGNAL_BRANCH,
                node_id=node_id,
                conditions=conditions,
            )
            if match_id is not None and matches is not None:
                found = await look_back(
                    self._repo, conn, tenant_id=tenant_id, conditions=conditions
                )
                if found:
                    await matches.satisfy_now(conn, match_id=match_id, found=found)
        if matches is not None and any(c.kind is ConditionKind.SLEEP for c in conditions):
            matches.sleep_registered()

    async def result(self, *, tenant_id: str, task_id: str, signal_key: str) -> bytes | None:
        """What satisfied the signal (``{"CREATE": {key: [data]}}`` as JSON), or None while
        it waits; raises when the task or the signal does not exist."""
        async with self._repo.transaction() as conn:
            task = await self._repo.durable_task_state(conn, task_id=task_id, tenant_id=tenant_id)
            if task is None:
                raise DurableTaskNotFound(f"task {task_id} not found")
            signal = await self._repo.durable_signal(conn, task_id=task_id, signal_key=signal_key)
        if signal is None or not signal["satisfied"]:
            return None
        return bytes(signal["result"] or b"{}")
