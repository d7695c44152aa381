"""Deadlines: execution timeouts, schedule timeouts, and workers whose heartbeats stopped.

Each replica runs this loop. Work found by two replicas at once is harmless: every outcome
is applied only to the attempt that is still running, so the second one changes nothing.
The loop sleeps until the nearest deadline (at most one second), not on a fixed poll.

Liveness counts only time during which heartbeats could be stored: after this loop has seen
the database unavailable, no worker is declared dead until one heartbeat timeout after the
database is back, so that workers whose heartbeats failed during the outage can send one.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import UTC, datetime

from hewer.engine.core.durations import format_duration
from hewer.engine.db.repository import Repository
from hewer.engine.services.lifecycle import Lifecycle, StaleAttempt, TaskNotFound
from hewer.engine.services.loops import DeadlineLoop
from hewer.engine.services.matches import Matches
from hewer.engine.services.outage import is_database_unavailable

log = logging.getLogger(__name__)
BATCH = 200
MAX_SLEEP = 1.0


class Timers(DeadlineLoop):
    def __init__(self, *, repo: Repository, lifecycle: Lifecycle, heartbeat_timeout: float) -> None:
        super().__init__(name="timers", max_sleep=MAX_SLEEP)
        self._repo = repo
        self._lifecycle = lifecycle
        self._heartbeat_timeout = heartbeat_timeout
        self._database_lost = False
        # monotonic time before which no worker is declared dead (grace after an outage)
        self._judge_liveness_from = 0.0
        # DAG condition sleeps (services/matches.py); set by the server
        self.matches: Matches | None = None

    def pass_failed(self, exc: Exception) -> None:
        if is_database_unavailable(exc):
            self._database_lost = True

    def _liveness_paused(self) -> bool:
        now = time.monotonic()
        if self._database_lost:
            self._database_lost = False
            self._judge_liveness_from = now + self._heartbeat_timeout
            log.warning(
                "database reachable again: worker liveness is judged again in %.0f s "
                "(heartbeats could not be stored during the outage)",
                self._heartbeat_timeout,
            )
        return now < self._judge_liveness_from

    async def seconds_to_next(self) -> float | None:
        deadlines = [await self._repo.next_deadline()]
        if self.matches is not None:
            deadlines.append(await self._repo.next_sleep_deadline())
        due = [d for d in deadlines if d is not None]
        return None if not due else (min(due) - datetime.now(UTC)).total_seconds()

    async def run_once(self) -> None:
        if self.matches is not None:
            while await self.matches.fire_due_sleeps():
                pass
            # children whose end notification was lost (the bus reconnected)
            while await self.matches.fire_ready_children():
                pass
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
        if self._liveness_paused():
            return
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
