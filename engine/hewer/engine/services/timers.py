"""Deadlines: execution timeouts, schedule timeouts, and workers whose heartbeats stopped.

Each replica runs this loop. Work found by two replicas at once is harmless: every outcome
is applied only to the attempt that is still running, so the second one changes nothing.
The loop sleeps until the nearest deadline (at most one second), not on a fixed poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from hewer.engine.core.durations import format_duration
from hewer.engine.db.repository import Repository
from hewer.engine.services.lifecycle import Lifecycle, StaleAttempt, TaskNotFound

log = logging.getLogger(__name__)
BATCH = 200
MAX_SLEEP = 1.0


class Timers:
    def __init__(self, *, repo: Repository, lifecycle: Lifecycle, heartbeat_timeout: float) -> None:
        self._repo = repo
        self._lifecycle = lifecycle
        self._heartbeat_timeout = heartbeat_timeout
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="timers")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
                sleep = MAX_SLEEP
                deadline = await self._repo.next_deadline()
                if deadline is not None:
                    sleep = max(
                        0.01, min(MAX_SLEEP, (deadline - datetime.now(UTC)).total_seconds())
                    )
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("timers pass failed")
                sleep = MAX_SLEEP
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=sleep)

    async def run_once(self) -> None:
        for row in await self._repo.expired_tasks(limit=BATCH):
            with contextlib.suppress(StaleAttempt, TaskNotFound):
                await self._lifecycle.failed(
                    tenant_id=str(row["tenant_id"]),
                    task_id=str(row["id"]),
                    retry_count=row["retry_count"],
                    error=f"Task exceeded timeout of {format_duration(row['timeout_seconds'])}",
                    event_type="TIMED_OUT",
                    cancel_on_worker=True,
                )
        for row in await self._repo.schedule_timed_out(limit=BATCH):
            await self._lifecycle.cancel(
                tenant_id=str(row["tenant_id"]),
                task_ids=[str(row["task_id"])],
                reason="SCHEDULING_TIMED_OUT",
            )
        for row in await self._repo.tasks_of_dead_workers(
            stale_after=self._heartbeat_timeout, limit=BATCH
        ):
            requeued = await self._lifecycle.requeue_lost(
                tenant_id=str(row["tenant_id"]),
                task_id=str(row["id"]),
                retry_count=row["retry_count"],
                reason=f"worker {row['worker_id']} stopped sending heartbeats",
            )
            if requeued:
                log.warning("re-queued task %s from dead worker %s", row["id"], row["worker_id"])
        await self._repo.deactivate_dead_workers(stale_after=self._heartbeat_timeout)
