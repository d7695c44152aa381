"""Heartbeats of the workers whose action stream this replica holds, written in batches.

A worker beats every 4 s; 500 workers written one statement each were 125 commits a second
and one engine round trip per beat. Instead a beat is noted in memory and a flusher writes
all beats noted since its last pass in one ``UPDATE ... FROM unnest(...)`` (every
:data:`FLUSH_EVERY` seconds, and only when there is something to write). The stored time is
the time the beat arrived, taken on the database's clock (``now()`` minus the beat's age at
flush time), so the batching delays the write by at most one flush, not the timestamp.

Why a flush of at most half a second: the REST API reports a worker INACTIVE once its stored
beat is 5 s old (api/rest/workers.py) and beats come every 4 s, and the scheduler skips workers
whose stored beat is older than its assign window (services/scheduler.py).

What the direct write answered at once, the flush learns for the next beat: a worker the
database no longer knows is answered NOT_FOUND, and a worker whose listener the database marks
inactive (timers declared it dead while its stream stayed open) is told to reconnect.

While the database is unavailable a flush keeps its beats (the newest per worker) and the next
flush writes them, with their true age: a worker is not failed for the engine's outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from enum import Enum

from hewer.engine.db.repository import Repository
from hewer.engine.services.outage import is_database_unavailable, outage_log

log = logging.getLogger(__name__)
FLUSH_EVERY = 0.5  # seconds


class Verdict(Enum):
    """What the last flush found for a worker, told to it on its next beat."""

    UNKNOWN = "unknown"  # no such worker in its tenant
    LISTENER_LOST = "listener_lost"  # stream open here, but the database says inactive


class HeartbeatBuffer:
    def __init__(self, *, repo: Repository, flush_every: float = FLUSH_EVERY) -> None:
        self._repo = repo
        self._flush_every = flush_every
        # (tenant, worker) -> monotonic time of its newest beat not yet stored
        self._pending: dict[tuple[str, str], float] = {}
        self._verdicts: dict[tuple[str, str], Verdict] = {}
        self._task: asyncio.Task[None] | None = None

    def note(self, *, tenant_id: str, worker_id: str) -> Verdict | None:
        """Note a beat; returns what the previous flush found for this worker, if anything
        (then the beat is not noted: the worker is unknown or must reconnect first)."""
        key = (tenant_id, worker_id)
        verdict = self._verdicts.pop(key, None)
        if verdict is None:
            self._pending[key] = time.monotonic()
        return verdict

    def listener_established(self, *, tenant_id: str, worker_id: str) -> None:
        """The worker re-opened its stream: an earlier verdict no longer holds."""
        self._verdicts.pop((tenant_id, worker_id), None)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> int:
        """Write every noted beat in one statement; returns how many were written. On a
        database outage the beats are kept for the next flush."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        now = time.monotonic()
        keys = list(batch)
        try:
            rows = await self._repo.worker_heartbeats(
                tenant_ids=[tenant_id for tenant_id, _ in keys],
                worker_ids=[worker_id for _, worker_id in keys],
                ages=[max(0.0, now - batch[key]) for key in keys],
            )
        except Exception as exc:
            for key, received in batch.items():
                # a beat that arrived during the failed write is newer: it wins
                self._pending.setdefault(key, received)
            if is_database_unavailable(exc):
                outage_log("heartbeats").failed(exc)
                return 0
            raise
        outage_log("heartbeats").succeeded()
        found = set()
        for row in rows:
            key = (str(row["tenant_id"]), str(row["id"]))
            found.add(key)
            if row["last_listener_established"] is not None and not row["is_active"]:
                self._verdicts[key] = Verdict.LISTENER_LOST
        for key in keys:
            if key not in found:
                self._verdicts[key] = Verdict.UNKNOWN
        return len(rows)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="heartbeats")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # the last beats still count (a replica shutting down may hand its workers over)
        with contextlib.suppress(Exception):
            await self.flush()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._flush_every)
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("writing heartbeats failed; kept for the next flush")
