"""Queue writes of fair recovery (``sql/queries/recovery.sql``, migration 0008)."""

from __future__ import annotations

import json

from hewer.engine.db.base import Conn, QueueEntry, RepositoryBase
from hewer.engine.db.queries import query


class RecoveryQueries(RepositoryBase):
    async def requeue_lost_item(self, conn: Conn, *, tenant_id: str, entry: QueueEntry) -> int:
        """Queue ``entry`` (a lost attempt, no delay) under its task's previous queue position;
        returns the queue item id used."""
        queue_id = await conn.fetchval(
            query("requeue_lost_item"),
            tenant_id,
            entry.task_id,
            entry.retry_count,
            entry.action_id,
            entry.priority,
            json.dumps(entry.slot_requests),
            entry.desired_worker_id,
            float(entry.schedule_timeout_seconds),
            entry.rate_limits,
        )
        return int(queue_id)
