"""The only code that talks to asyncpg.

Services compose units of work out of these primitives inside :meth:`Repository.transaction`;
each primitive is one named statement (see ``sql/queries``), so a unit of work costs as many
round trips as it has primitives, and batched primitives take arrays (``unnest``). The
statements are grouped in mixins by area; this class joins them.
"""

from __future__ import annotations

import asyncpg

from hewer.engine.db.autoscaling_repo import AutoscalingQueries
from hewer.engine.db.base import (
    Conn,
    NewRun,
    NewTaskRow,
    QueueEntry,
    Record,
    TaskEvent,
    WriteObserver,
    create_pool,
)
from hewer.engine.db.batches_repo import BatchQueries
from hewer.engine.db.concurrency_repo import ConcurrencyQueries
from hewer.engine.db.dashboard_repo import DashboardQueries
from hewer.engine.db.declared_repo import DeclaredQueries
from hewer.engine.db.definitions_repo import DefinitionQueries
from hewer.engine.db.durable_repo import DurableQueries
from hewer.engine.db.events_repo import EventQueries
from hewer.engine.db.idempotency_repo import IdempotencyQueries
from hewer.engine.db.matches_repo import MatchQueries
from hewer.engine.db.rate_limits_repo import RateLimitQueries
from hewer.engine.db.reads import ReadQueries
from hewer.engine.db.recovery_repo import RecoveryQueries
from hewer.engine.db.runs_repo import RunQueries
from hewer.engine.db.schedule_repo import DroppedDay, PartitionsBusy, ScheduleQueries
from hewer.engine.db.traces_repo import TraceQueries
from hewer.engine.db.workers_repo import WorkerQueries

__all__ = [
    "Conn",
    "DroppedDay",
    "NewRun",
    "NewTaskRow",
    "PartitionsBusy",
    "QueueEntry",
    "Record",
    "Repository",
    "TaskEvent",
    "WriteObserver",
    "create_pool",
]


class Repository(
    ReadQueries,
    DefinitionQueries,
    RunQueries,
    WorkerQueries,
    EventQueries,
    DeclaredQueries,
    ScheduleQueries,
    ConcurrencyQueries,
    RateLimitQueries,
    RecoveryQueries,
    MatchQueries,
    DurableQueries,
    IdempotencyQueries,
    BatchQueries,
    AutoscalingQueries,
    TraceQueries,
    DashboardQueries,
):
    def __init__(self, pool: asyncpg.Pool, *, observer: WriteObserver) -> None:
        self.pool = pool
        self.observer = observer

    async def close(self) -> None:
        await self.pool.close()
