"""What workers tell the engine outside the task lifecycle: registration, their action stream
opening and closing, heartbeats, labels, slot release, timeout refresh and log lines; and the
rule that only the worker holding an attempt may fail or cancel it.

The gRPC dispatcher calls this service, never the repository (``lint-imports`` checks it).

Heartbeats of a worker whose action stream this replica holds are noted in memory and written
in batches (services/heartbeats.py), kept through a database outage and written once it is
back: a worker is not told its heartbeat failed (the SDK would then tear down its listener and
drop the task reports it is retrying) for an outage that is the engine's, and timers do not
judge liveness until a heartbeat timeout after the outage (services/timers.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hewer.engine.db.base import Record
from hewer.engine.db.repository import Repository
from hewer.engine.services.heartbeats import HeartbeatBuffer, Verdict
from hewer.engine.services.lifecycle import NotHolder, TaskNotFound


@dataclass(frozen=True, slots=True)
class Heartbeat:
    stored: bool  # False: noted in memory, written by the next flush
    # the worker had an action stream, but it is not active any more: it must reconnect
    listener_lost: bool


class WorkerRegistry:
    def __init__(self, repo: Repository, *, beats: HeartbeatBuffer) -> None:
        self._repo = repo
        self._beats = beats

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
        await self._repo.insert_worker(
            worker_id=worker_id,
            tenant_id=tenant_id,
            name=name,
            actions=actions,
            slot_config=slot_config,
            labels=labels,
            runtime_info=runtime_info,
        )

    async def get_worker(self, *, tenant_id: str, worker_id: str) -> Record | None:
        return await self._repo.get_worker(tenant_id=tenant_id, worker_id=worker_id)

    async def worker_listening(self, *, tenant_id: str, worker_id: str, engine_id: str) -> bool:
        listening = await self._repo.worker_listening(
            tenant_id=tenant_id, worker_id=worker_id, engine_id=engine_id
        )
        # after the write: a flush that read the inactive row before it must not send the
        # worker, which has just connected, off to reconnect again
        self._beats.listener_established(tenant_id=tenant_id, worker_id=worker_id)
        return listening

    async def worker_disconnected(self, *, worker_id: str, engine_id: str) -> None:
        await self._repo.worker_disconnected(worker_id=worker_id, engine_id=engine_id)

    async def heartbeat(
        self, *, tenant_id: str, worker_id: str, streaming_here: bool
    ) -> Heartbeat | None:
        """Record a heartbeat; None if the worker is unknown. ``streaming_here``: this replica
        holds the worker's action stream; then the beat is batched (services/heartbeats.py),
        else written at once (a stream on another replica, or none yet)."""
        if streaming_here:
            verdict = self._beats.note(tenant_id=tenant_id, worker_id=worker_id)
            if verdict is Verdict.UNKNOWN:
                return None
            return Heartbeat(stored=False, listener_lost=verdict is Verdict.LISTENER_LOST)
        row = await self._repo.worker_heartbeat(tenant_id=tenant_id, worker_id=worker_id)
        if row is None:
            return None
        lost = row["last_listener_established"] is not None and not row["is_active"]
        return Heartbeat(stored=True, listener_lost=lost)

    async def current_retry_count(self, *, tenant_id: str, task_id: str) -> int:
        """The task's current attempt, for step events that do not name theirs."""
        task = await self._repo.get_task(task_id, tenant_id=tenant_id)
        if task is None:
            raise TaskNotFound(f"task {task_id} not found")
        return int(task["retry_count"])

    async def check_holder(
        self, *, tenant_id: str, task_id: str, retry_count: int, reporter: str | None
    ) -> None:
        """Raise :class:`NotHolder` when ``reporter`` reports on the current attempt of a task
        another worker holds (the SDK may omit the worker id: then anyone may)."""
        task = await self._repo.get_task(task_id, tenant_id=tenant_id)
        if task is None:
            raise TaskNotFound(f"task {task_id} not found")
        holder = task["worker_id"]
        if reporter and holder and str(holder) != reporter and retry_count == task["retry_count"]:
            raise NotHolder(
                f"task {task_id} attempt {retry_count} is not held by worker {reporter}"
            )

    async def refresh_timeout(
        self, *, tenant_id: str, task_id: str, seconds: float
    ) -> datetime | None:
        return await self._repo.refresh_timeout(
            tenant_id=tenant_id, task_id=task_id, seconds=seconds
        )

    async def release_slot(self, *, tenant_id: str, task_id: str) -> str | None:
        return await self._repo.release_slot(tenant_id=tenant_id, task_id=task_id)

    async def merge_worker_labels(
        self, *, tenant_id: str, worker_id: str, labels: dict[str, Any]
    ) -> bool:
        return await self._repo.merge_worker_labels(
            tenant_id=tenant_id, worker_id=worker_id, labels=labels
        )

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
        return await self._repo.insert_log_line(
            tenant_id=tenant_id,
            task_id=task_id,
            retry_count=retry_count,
            level=level,
            message=message,
            metadata=metadata,
            created_at=created_at,
        )

    async def task_run_id(self, *, tenant_id: str, task_id: str) -> str | None:
        return await self._repo.task_run_id(tenant_id=tenant_id, task_id=task_id)
