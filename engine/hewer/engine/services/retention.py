"""Data retention: deletes final-state runs (with their tasks, events and logs), events,
fired or dropped scheduled runs and received OpenTelemetry spans older than the tenant's
retention (default 720 h), deleted workflows once their last run is gone, and expired
idempotency keys.

Runs, tasks and task events (migration 0016) and user events (0019) live in one partition
per UTC day. A day is dropped whole once every run in it is final and every run and event is
past its tenant's retention; until then the pass leaves its expired runs and events to that
drop instead of deleting them row by row. Rows are
still deleted one by one where no drop will come: in the DEFAULT partition (rows older than
the partitions, or of a day the partitions missed), for tenants whose retention is shorter
than the longest one, and in a day still held :data:`SPARE_GRACE` after its retention by a
run that never finished. The pass also creates the partitions of the coming days
(:data:`DAYS_AHEAD`), as the engine does at start.

Every replica runs the loop; a session advisory lock lets one replica at a time do a pass.
Deletes go in small batches so that the hot tables are never locked for long. Creating or
dropping a day's partitions needs the four tables to itself for a moment: it waits at most
:data:`PARTITION_LOCK_WAIT` for them (everything that touches them queues behind a waiting
change), tries :data:`PARTITION_ATTEMPTS` times, and otherwise leaves the day to the next
pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar

from hewer.engine.core.ids import time_floor
from hewer.engine.db.repository import DroppedDay, PartitionsBusy, Repository
from hewer.engine.services.metrics import METRICS
from hewer.engine.services.outage import log_failure

log = logging.getLogger(__name__)
T = TypeVar("T")
BATCH = 500
DAYS_AHEAD = 2
SPARE_GRACE = timedelta(days=7)
# how long creating or dropping partitions may hold up the statements queued behind it
# (well below PostgreSQL's deadlock_timeout of 1 s: a change that waits on a transaction
# waiting on it gives up first; migration 0018)
PARTITION_LOCK_WAIT = timedelta(milliseconds=100)
PARTITION_ATTEMPTS = 3
PARTITION_RETRY_PAUSE_SECONDS = 1.0
# partitions must keep being created however rarely retention is set to run
PARTITION_CHECK_SECONDS = 3600.0
_LOCK_KEY = 0x4865776572_0003  # "Hewer", migration 3


class Retention:
    def __init__(self, *, repo: Repository, default_hours: int, interval_seconds: float) -> None:
        self._repo = repo
        self._default_hours = default_hours
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        await asyncio.sleep(min(60.0, self._interval))  # not during start-up
        due = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                if loop.time() >= due:
                    due = loop.time() + self._interval
                    deleted = await self.run_once()
                    if any(deleted.values()):
                        log.info("retention deleted %s", deleted)
                else:
                    await ensure_partitions(self._repo)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_failure("retention", exc, log, "retention pass")
            await asyncio.sleep(min(self._interval, PARTITION_CHECK_SECONDS))

    async def run_once(self, *, now: datetime | None = None) -> dict[str, int]:
        """One pass over every tenant; counts of deleted rows (empty if another replica
        holds the lock)."""
        # "workflows": deleted workflows whose runs have all expired (runs go first);
        # "days": day partitions dropped (their runs and events are counted in "runs" and
        # "events")
        kinds = ("runs", "events", "scheduled", "workflows", "spans")
        totals = dict.fromkeys((*kinds, "days"), 0)
        async with self._repo.connection() as lock_conn:
            if not await self._repo.try_advisory_lock(lock_conn, _LOCK_KEY):
                return {}
            try:
                current = now or datetime.now(UTC)
                await ensure_partitions(self._repo, today=current.date())
                hours = {
                    str(t["id"]): int(t["hours"])
                    for t in await self._repo.tenant_retention(self._default_hours)
                }
                cutoffs = {tenant: current - timedelta(hours=h) for tenant, h in hours.items()}
                runs, events, days = await self._drop_expired_days(cutoffs)
                totals["runs"] += runs
                totals["events"] += events
                totals["days"] += days
                longest = max(hours.values(), default=self._default_hours)
                for tenant, cutoff in cutoffs.items():
                    # the longest retention decides when a day can go: its runs wait for that
                    spare_from = (
                        time_floor(cutoff - SPARE_GRACE) if hours[tenant] >= longest else None
                    )
                    for what in kinds:
                        while True:
                            n = await self._repo.delete_old(
                                what,
                                tenant_id=tenant,
                                cutoff=cutoff,
                                limit=BATCH,
                                spare_from=spare_from,
                            )
                            totals[what] += n
                            if n < BATCH:
                                break
                # expired keys are free already (a claim takes them over): housekeeping
                while True:
                    n = await self._repo.delete_expired_idempotency_keys(limit=BATCH)
                    totals["idempotency_keys"] = totals.get("idempotency_keys", 0) + n
                    if n < BATCH:
                        break
            finally:
                await self._repo.advisory_unlock(lock_conn, _LOCK_KEY)
        return totals

    async def _drop_expired_days(self, cutoffs: dict[str, datetime]) -> tuple[int, int, int]:
        """Drop every day whose runs and events are all past their tenant's cutoff;
        (runs, events, days)."""
        if not cutoffs:
            return 0, 0, 0
        latest = max(cutoffs.values())
        runs = events = days = 0
        for day in await self._repo.partition_days():
            if datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1) > latest:
                break
            dropped = await self._drop_day(day, cutoffs)
            if dropped is not None:
                runs += dropped.runs
                events += dropped.events
                days += 1
        return runs, events, days

    async def _drop_day(self, day: date, cutoffs: dict[str, datetime]) -> DroppedDay | None:
        return await briefly_locking(
            "drop",
            f"dropping {day}",
            lambda: self._repo.drop_day_partitions(
                day=day, cutoffs=cutoffs, lock_wait=PARTITION_LOCK_WAIT
            ),
        )


async def ensure_partitions(repo: Repository, *, today: date | None = None) -> list[date]:
    """Create the day partitions from yesterday to :data:`DAYS_AHEAD` days ahead (clocks of
    replicas may differ a little; a day without its partition falls into DEFAULT). Busy
    tables leave them to the next call: the coming days' partitions are made days early."""
    first = (today or datetime.now(UTC).date()) - timedelta(days=1)
    created = await briefly_locking(
        "create",
        "creating partitions",
        lambda: repo.ensure_partitions(
            first_day=first, days=DAYS_AHEAD + 2, lock_wait=PARTITION_LOCK_WAIT
        ),
    )
    if created:
        log.info("created partitions for %s", ", ".join(d.isoformat() for d in created))
    return created or []


async def briefly_locking(kind: str, what: str, change: Callable[[], Awaitable[T]]) -> T | None:
    """Run a partition change that may wait only :data:`PARTITION_LOCK_WAIT` for its tables,
    :data:`PARTITION_ATTEMPTS` times; None if the tables stayed busy (counted in
    ``hewer_partition_changes_deferred_total{change=kind}``)."""
    for attempt in range(1, PARTITION_ATTEMPTS + 1):
        try:
            return await change()
        except PartitionsBusy as exc:
            if attempt == PARTITION_ATTEMPTS:
                METRICS.partition_changes_deferred.labels(kind).inc()
                log.warning("%s: left to the next pass (%s)", what, exc)
                return None
            await asyncio.sleep(PARTITION_RETRY_PAUSE_SECONDS)
    return None
