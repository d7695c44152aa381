"""Data retention: deletes final-state runs (with their tasks, events and logs), events,
fired or dropped scheduled runs and received OpenTelemetry spans older than the tenant's
retention (default 720 h), deleted workflows once their last run is gone, and expired
idempotency keys.

Every replica runs the loop; a session advisory lock lets one replica at a time do a pass.
Deletes go in small batches so that the hot tables are never locked for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from hewer.engine.db.repository import Repository
from hewer.engine.services.outage import log_failure

log = logging.getLogger(__name__)
BATCH = 500
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
        while True:
            try:
                deleted = await self.run_once()
                if any(deleted.values()):
                    log.info("retention deleted %s", deleted)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_failure("retention", exc, log, "retention pass")
            await asyncio.sleep(self._interval)

    async def run_once(self, *, now: datetime | None = None) -> dict[str, int]:
        """One pass over every tenant; counts of deleted rows (empty if another replica
        holds the lock)."""
        # "workflows": deleted workflows whose runs have all expired (runs go first)
        totals = {"runs": 0, "events": 0, "scheduled": 0, "workflows": 0, "spans": 0}
        async with self._repo.connection() as lock_conn:
            if not await self._repo.try_advisory_lock(lock_conn, _LOCK_KEY):
                return {}
            try:
                current = now or datetime.now(UTC)
                for tenant in await self._repo.tenant_retention(self._default_hours):
                    cutoff = current - timedelta(hours=int(tenant["hours"]))
                    for what in totals:
                        while True:
                            n = await self._repo.delete_old(
                                what, tenant_id=str(tenant["id"]), cutoff=cutoff, limit=BATCH
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
