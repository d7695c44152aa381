"""The DAG condition match table (``matches.sql``, migration 0012)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from hewer.engine.core.conditions import Condition, ConditionKind
from hewer.engine.core.task_state import COMPLETED, QUEUED, WAITING
from hewer.engine.db.base import Conn, NewTaskRow, Record, RepositoryBase
from hewer.engine.db.queries import query


def condition_columns(c: Condition) -> tuple[object, ...]:
    """A condition's columns of ``task_match_conditions``, in the order both inserts
    (``insert_task_match_conditions``, ``insert_durable_match_conditions``) unnest them;
    an event key is kept for user events only."""
    return (
        c.or_group_id,
        c.kind.value,
        c.readable_data_key,
        c.expression,
        c.event_key if c.kind is ConditionKind.USER_EVENT else None,
        c.event_scope or None,
        c.sleep_seconds,
    )


class MatchQueries(RepositoryBase):
    async def insert_task_matches(
        self, conn: Conn, *, tenant_id: str, rows: Sequence[NewTaskRow]
    ) -> list[str]:
        """One match per WAITING task, holding its pending sleep and user-event conditions;
        returns the matches' ids in the order of ``rows`` (their conditions in the order of
        ``pending``, as :meth:`match_conditions` reads them back)."""
        if not rows:
            return []
        match_ids = [str(uuid.uuid4()) for _ in rows]
        await conn.execute(query("insert_task_matches"), tenant_id, match_ids, [r.id for r in rows])
        columns: list[list[object]] = [[] for _ in range(9)]
        for match_id, row in zip(match_ids, rows, strict=True):
            for c in row.task.pending:
                values = (match_id, c.action.value, *condition_columns(c))
                for column, value in zip(columns, values, strict=True):
                    column.append(value)
        await conn.execute(query("insert_task_match_conditions"), tenant_id, *columns)
        return match_ids

    async def due_sleep_matches(self, conn: Conn, *, limit: int) -> list[str]:
        return [str(r["id"]) for r in await conn.fetch(query("due_sleep_matches"), limit)]

    async def event_key_matches(self, conn: Conn, *, tenant_id: str, key: str) -> list[str]:
        rows = await conn.fetch(query("event_key_matches"), tenant_id, key)
        return [str(r["id"]) for r in rows]

    async def recent_events(
        self, conn: Conn, *, tenant_id: str, key: str, since: datetime, scope: str | None
    ) -> list[str]:
        rows = await conn.fetch(query("recent_events"), tenant_id, key, since, scope)
        return [str(r["payload"]) for r in rows]

    async def match_conditions(self, conn: Conn, match_ids: Sequence[str]) -> list[Record]:
        return list(await conn.fetch(query("match_conditions"), list(match_ids)))

    async def satisfy_match_conditions(
        self, conn: Conn, *, ids: Sequence[int], data: Sequence[str]
    ) -> None:
        await conn.execute(query("satisfy_match_conditions"), list(ids), list(data))

    async def delete_task_matches(self, conn: Conn, match_ids: Sequence[str]) -> None:
        await conn.execute(query("delete_task_matches"), list(match_ids))

    async def next_sleep_deadline(self) -> datetime | None:
        value = await self.pool.fetchval(query("next_sleep_deadline"))
        return value if isinstance(value, datetime) else None

    async def queue_waiting_task(self, conn: Conn, task_id: str) -> Record | None:
        return await conn.fetchrow(
            query("queue_waiting_task"), task_id, WAITING.value, QUEUED.value
        )

    async def skip_waiting_task(self, conn: Conn, task_id: str, *, output: str) -> Record | None:
        return await conn.fetchrow(
            query("skip_waiting_task"), task_id, WAITING.value, COMPLETED.value, output
        )
