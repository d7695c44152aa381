"""The durable event log (``durable.sql``, migration 0013)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from hewer.engine.core.conditions import Condition, ConditionKind
from hewer.engine.core.durable import Branch
from hewer.engine.core.task_state import EVICTED, QUEUED, RUNNING
from hewer.engine.db.base import Conn, Record, RepositoryBase
from hewer.engine.db.matches_repo import condition_columns
from hewer.engine.db.queries import query


@dataclass(frozen=True, slots=True)
class NewEntry:
    branch_id: int
    node_id: int
    kind: str
    idempotency_key: bytes
    label: str | None = None
    child_run_id: str | None = None


class DurableQueries(RepositoryBase):
    async def lock_durable_task(self, conn: Conn, *, task_id: str, tenant_id: str) -> Record | None:
        return await conn.fetchrow(query("lock_durable_task"), task_id, tenant_id)

    async def take_durable_nodes(
        self, conn: Conn, *, task_id: str, tenant_id: str, invocation: int, count: int
    ) -> tuple[int, int]:
        """Reserve ``count`` node ids; returns (first node id, branch id)."""
        row = await conn.fetchrow(
            query("take_durable_nodes"), task_id, tenant_id, invocation, count
        )
        assert row is not None
        return int(row["last_node_id"]) - count + 1, int(row["branch_id"])

    async def durable_branches(self, conn: Conn, task_id: str) -> dict[int, Branch]:
        rows = await conn.fetch(query("durable_branches"), task_id)
        return {
            int(r["branch_id"]): Branch(
                int(r["branch_id"]), int(r["parent_branch_id"]), int(r["first_node_id"])
            )
            for r in rows
        }

    async def durable_entries_at(
        self, conn: Conn, *, task_id: str, refs: Sequence[tuple[int, int]]
    ) -> dict[tuple[int, int], Record]:
        if not refs:
            return {}
        rows = await conn.fetch(
            query("durable_entries_at"), task_id, [b for b, _ in refs], [n for _, n in refs]
        )
        return {(int(r["branch_id"]), int(r["node_id"])): r for r in rows}

    async def insert_durable_entries(
        self, conn: Conn, *, task_id: str, tenant_id: str, entries: Sequence[NewEntry]
    ) -> None:
        if not entries:
            return
        await conn.execute(
            query("insert_durable_entries"),
            task_id,
            tenant_id,
            [e.branch_id for e in entries],
            [e.node_id for e in entries],
            [e.kind for e in entries],
            [e.idempotency_key for e in entries],
            [e.label for e in entries],
            [e.child_run_id for e in entries],
        )

    async def satisfy_durable_entry(
        self,
        conn: Conn,
        *,
        task_id: str,
        branch_id: int,
        node_id: int,
        result: bytes | None,
        is_failure: bool = False,
        error_message: str | None = None,
    ) -> bool:
        row = await conn.fetchrow(
            query("satisfy_durable_entry"),
            task_id,
            branch_id,
            node_id,
            result,
            is_failure,
            error_message,
        )
        return row is not None

    async def insert_durable_match(
        self,
        conn: Conn,
        *,
        tenant_id: str,
        task_id: str,
        branch_id: int,
        node_id: int,
        conditions: Sequence[Condition],
        child_run_id: str | None = None,
    ) -> str | None:
        """A match for one log entry: its wait conditions, or one CHILD condition."""
        match_id = str(uuid.uuid4())
        created = await conn.fetchval(
            query("insert_durable_match"), match_id, tenant_id, task_id, branch_id, node_id
        )
        if created is None:  # the entry already has its match
            return None
        columns: list[list[object]] = [[] for _ in range(9)]
        if child_run_id is not None:
            rows: list[tuple[object, ...]] = [
                (
                    "child",
                    ConditionKind.CHILD.value,
                    "child",
                    "",
                    None,
                    None,
                    0.0,
                    None,
                    child_run_id,
                )
            ]
        else:
            rows = [(*condition_columns(c), c.sleep_for or None, None) for c in conditions]
        for values in rows:
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        await conn.execute(query("insert_durable_match_conditions"), match_id, tenant_id, *columns)
        return match_id

    async def child_run_tasks(self, conn: Conn, run_ids: Sequence[str]) -> list[Record]:
        return list(await conn.fetch(query("child_run_tasks"), list(run_ids)))

    async def ready_child_matches(self, conn: Conn, *, limit: int) -> list[str]:
        return [str(r["id"]) for r in await conn.fetch(query("ready_child_matches"), limit)]

    async def evict_durable_task(
        self, conn: Conn, *, task_id: str, invocation: int, worker_id: str | None
    ) -> Record | None:
        return await conn.fetchrow(
            query("evict_durable_task"),
            task_id,
            invocation,
            RUNNING.value,
            EVICTED.value,
            worker_id,
        )

    async def restore_evicted_task(self, conn: Conn, task_id: str) -> Record | None:
        return await conn.fetchrow(
            query("restore_evicted_task"), task_id, EVICTED.value, QUEUED.value
        )

    async def create_durable_branch(
        self, conn: Conn, *, task_id: str, tenant_id: str, parent_branch_id: int, node_id: int
    ) -> int:
        value = await conn.fetchval(
            query("create_durable_branch"), task_id, tenant_id, parent_branch_id, node_id
        )
        await conn.execute(query("set_durable_branch"), task_id, value)
        return int(value)

    async def durable_entry_exists(
        self, conn: Conn, *, task_id: str, branch_id: int, node_id: int
    ) -> bool:
        return bool(await conn.fetchval(query("durable_entry_exists"), task_id, branch_id, node_id))

    async def durable_task_state(
        self, conn: Conn, *, task_id: str, tenant_id: str
    ) -> Record | None:
        return await conn.fetchrow(query("durable_task_state"), task_id, tenant_id)

    async def durable_waiting_states(
        self, *, tenant_id: str, nodes: Sequence[tuple[str, int, int]]
    ) -> list[Record]:
        """``(task, branch, node)`` each: the task's ``invocation_count`` and whether the
        node is ``satisfied``."""
        if not nodes:
            return []
        return list(
            await self.pool.fetch(
                query("durable_waiting_states"),
                tenant_id,
                [t for t, _, _ in nodes],
                [b for _, b, _ in nodes],
                [n for _, _, n in nodes],
            )
        )

    async def durable_delivery_state(
        self, conn: Conn, *, task_id: str, tenant_id: str
    ) -> Record | None:
        return await conn.fetchrow(query("durable_delivery_state"), task_id, tenant_id)

    async def durable_log_entries(self, conn: Conn, task_id: str) -> list[Record]:
        return list(await conn.fetch(query("durable_log_entries"), task_id))

    async def durable_signal(self, conn: Conn, *, task_id: str, signal_key: str) -> Record | None:
        return await conn.fetchrow(query("durable_signal"), task_id, signal_key)

    async def next_signal_node(self, conn: Conn, task_id: str) -> int:
        return int(await conn.fetchval(query("next_signal_node"), task_id))

    async def pending_durable_nodes(self, conn: Conn, task_id: str) -> list[tuple[int, int]]:
        rows = await conn.fetch(query("pending_durable_nodes"), task_id)
        return [(int(r["branch_id"]), int(r["node_id"])) for r in rows]

    async def durable_log_nodes(self, conn: Conn, task_id: str) -> set[tuple[int, int]]:
        rows = await conn.fetch(query("durable_log_nodes"), task_id)
        return {(int(r["branch_id"]), int(r["node_id"])) for r in rows}

    async def durable_child_runs(self, conn: Conn, run_ids: Sequence[str]) -> list[Record]:
        return list(await conn.fetch(query("durable_child_runs"), list(run_ids)))

    async def child_run_matches(self, conn: Conn, run_ids: Sequence[str]) -> list[str]:
        return [str(r["id"]) for r in await conn.fetch(query("child_run_matches"), list(run_ids))]
