"""What autoscalers read: task-stats (Hatchet's documented format, for KEDA and the like)
and one WorkerPool's aggregate (for the Hewer operator), plus a long-poll that answers as
soon as a pool's runnable queue grows, so a pool at zero replicas wakes on the first
enqueue instead of at the next poll.

"Queued" is runnable work only: queue items not set aside and already available (tasks held
back by a concurrency key have no queue item; rate-limited items are deferred to their
bucket's refill). A pool's workers are the live workers labelled
``hewer.dev/worker-pool=<pool>`` (the operator passes the label to the SDK through
``HATCHET_CLIENT_WORKER_PRESET_LABELS``, with ``hewer.dev/pod`` naming the worker's Pod).

The wake-up comes from the bus's ``queue`` signal (any replica's enqueue); a re-check every
:data:`RECHECK_SECONDS` catches items whose ``available_at`` simply arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hewer.engine.db.repository import Repository

__all__ = [
    "MAX_WAIT_SECONDS",
    "Autoscaling",
    "PoolStats",
    "PoolWorker",
    "StateStat",
    "TaskStat",
]

POOL_LABEL = "hewer.dev/worker-pool"
POD_LABEL = "hewer.dev/pod"
MAX_WAIT_SECONDS = 60.0
RECHECK_SECONDS = 2.0


@dataclass(slots=True)
class StateStat:
    """One state (queued or running) of one task name."""

    total: int = 0
    oldest: datetime | None = None
    # queued only: counts per queue (the task's action id)
    queues: dict[str, int] | None = None
    # per concurrency strategy: {"expression", "type", "keys": {key: n}} (tasks each key
    # holds in this state: queued ones wait for admission or in the queue)
    concurrency: list[dict[str, Any]] = field(default_factory=list)

    def add(self, n: int, oldest: datetime | None) -> None:
        self.total += n
        if oldest is not None and (self.oldest is None or oldest < self.oldest):
            self.oldest = oldest


@dataclass(slots=True)
class TaskStat:
    queued: StateStat | None = None
    running: StateStat | None = None


@dataclass(frozen=True, slots=True)
class PoolWorker:
    id: str
    name: str
    pod: str | None
    paused: bool
    running: int

    @property
    def busy(self) -> bool:
        return self.running > 0


@dataclass(frozen=True, slots=True)
class PoolStats:
    pool: str
    workflows: list[str]
    unknown_workflows: list[str]
    queued: int
    running: int
    oldest_queued_age_seconds: float | None
    workers: list[PoolWorker]

    @property
    def busy_workers(self) -> int:
        return sum(1 for w in self.workers if w.busy)


class Autoscaling:
    def __init__(self, *, repo: Repository) -> None:
        self._repo = repo
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)

    # -- bus ------------------------------------------------------------------------------

    def on_bus(self, message: dict[str, Any]) -> None:
        """``queue`` wakes the tenant's waiters; ``resync`` (missed signals) wakes all."""
        if message.get("t") == "resync":
            groups = list(self._waiters.values())
        else:
            groups = [self._waiters.get(str(message.get("tenant")), set())]
        for group in groups:
            for event in group:
                event.set()

    # -- reads ----------------------------------------------------------------------------

    async def task_stats(self, tenant_id: str) -> dict[str, TaskStat]:
        """Runnable queued and running tasks per task name."""
        stats: dict[str, TaskStat] = {}
        for r in await self._repo.runnable_queued_by_task(tenant_id):
            entry = stats.setdefault(r["readable_id"], TaskStat())
            if entry.queued is None:
                entry.queued = StateStat(queues={})
            entry.queued.add(int(r["n"]), r["oldest"])
            queues = entry.queued.queues
            assert queues is not None
            queues[r["action_id"]] = queues.get(r["action_id"], 0) + int(r["n"])
        for r in await self._repo.running_by_task(tenant_id):
            entry = stats.setdefault(r["readable_id"], TaskStat())
            entry.running = StateStat()
            entry.running.add(int(r["n"]), r["oldest"])
        groups: dict[tuple[str, str, str], dict[str, Any]] = {}
        for r in await self._repo.concurrency_task_stats(tenant_id):
            entry = stats.setdefault(r["readable_id"], TaskStat())
            if r["status"] == "RUNNING":
                state = entry.running = entry.running or StateStat()
            else:
                # held back by its key: not runnable, so not in the queued total
                state = entry.queued = entry.queued or StateStat(queues={})
            group = groups.get((r["readable_id"], r["status"], r["strategy_id"]))
            if group is None:
                group = {"expression": r["expression"], "type": r["strategy"], "keys": {}}
                groups[(r["readable_id"], r["status"], r["strategy_id"])] = group
                state.concurrency.append(group)
            group["keys"][r["key"]] = int(r["n"])
        return stats

    async def pool_stats(self, tenant_id: str, *, pool: str, workflows: Sequence[str]) -> PoolStats:
        work = await self._repo.pool_work(tenant_id, workflows)
        rows = await self._repo.pool_workers(tenant_id, pool)
        oldest = work["oldest_queued"]
        known = set(work["known_workflows"] or [])
        return PoolStats(
            pool=pool,
            workflows=list(workflows),
            unknown_workflows=[w for w in workflows if w not in known],
            queued=int(work["queued"]),
            running=int(work["running"]),
            oldest_queued_age_seconds=(
                None if oldest is None else max(0.0, (work["now"] - oldest).total_seconds())
            ),
            workers=[
                PoolWorker(
                    id=str(r["id"]),
                    name=str(r["name"]),
                    pod=r["pod"],
                    paused=bool(r["is_paused"]),
                    running=int(r["running"]),
                )
                for r in rows
            ],
        )

    async def wait_for_work(
        self,
        tenant_id: str,
        *,
        pool: str,
        workflows: Sequence[str],
        known_queued: int,
        wait_seconds: float,
    ) -> PoolStats:
        """The pool's stats as soon as more than ``known_queued`` tasks are queued, or
        when ``wait_seconds`` have passed."""
        deadline = time.monotonic() + max(0.0, min(wait_seconds, MAX_WAIT_SECONDS))
        event = asyncio.Event()
        waiters = self._waiters[tenant_id]
        waiters.add(event)  # before the read: a signal between read and wait is not lost
        try:
            while True:
                event.clear()
                stats = await self.pool_stats(tenant_id, pool=pool, workflows=workflows)
                remaining = deadline - time.monotonic()
                if stats.queued > known_queued or remaining <= 0:
                    return stats
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(remaining, RECHECK_SECONDS))
        finally:
            waiters.discard(event)
            if not waiters:
                self._waiters.pop(tenant_id, None)
