"""Batch assignment: stored configs, claiming and preparing batch items, assigning a batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hewer.engine.core.batches import BatchConfig
from hewer.engine.db.base import Conn, Record, RepositoryBase
from hewer.engine.db.queries import query


def _config(row: Record) -> BatchConfig:
    return BatchConfig(
        max_size=row["max_size"],
        max_interval_ms=row["max_interval_ms"],
        group_key=row["group_key"],
        group_max_runs=row["group_max_runs"],
        broadcast_output=row["broadcast_output"],
    )


class BatchQueries(RepositoryBase):
    async def insert_step_batch_configs(
        self, conn: Conn, *, tenant_id: str, configs: Mapping[str, BatchConfig]
    ) -> None:
        """Store the batch configs of a new version's steps (``{step_id: config}``)."""
        if not configs:
            return
        items = list(configs.items())
        await conn.execute(
            query("insert_step_batch_configs"),
            tenant_id,
            [step_id for step_id, _ in items],
            [c.max_size for _, c in items],
            [c.max_interval_ms for _, c in items],
            [c.group_key for _, c in items],
            [c.group_max_runs for _, c in items],
            [c.broadcast_output for _, c in items],
        )

    async def step_batch_configs_of_version(
        self, target: Conn | None, version_id: str
    ) -> dict[str, BatchConfig]:
        rows = await (target or self.pool).fetch(query("step_batch_configs_of_version"), version_id)
        return {str(r["step_id"]): _config(r) for r in rows}

    async def batch_configs_of_actions(
        self, *, tenant_id: str, action_ids: Sequence[str]
    ) -> dict[str, BatchConfig]:
        """The batch config that applies to each of these actions (plain actions are absent)."""
        if not action_ids:
            return {}
        rows = await self.pool.fetch(
            query("batch_configs_of_actions"), tenant_id, sorted(set(action_ids))
        )
        return {r["action_id"]: _config(r) for r in rows}

    async def batch_actions_with_items(
        self, *, tenant_id: str, action_ids: Sequence[str]
    ) -> dict[str, bool]:
        """``{action: has items no flusher prepared yet}`` for actions with claimable items."""
        rows = await self.pool.fetch(
            query("batch_actions_with_items"), tenant_id, sorted(set(action_ids))
        )
        return {r["action_id"]: r["has_fresh"] for r in rows}

    async def fresh_batch_items(
        self, conn: Conn, *, tenant_id: str, action_id: str, limit: int
    ) -> list[Record]:
        return list(await conn.fetch(query("fresh_batch_items"), tenant_id, action_id, limit))

    async def lock_batch_action(self, conn: Conn, *, tenant_id: str, action_id: str) -> None:
        await conn.execute(query("lock_batch_action"), tenant_id, action_id)

    async def pending_batch_items(
        self, conn: Conn, *, tenant_id: str, action_id: str, limit: int
    ) -> list[Record]:
        return list(await conn.fetch(query("pending_batch_items"), tenant_id, action_id, limit))

    async def batch_item_contexts(self, conn: Conn, queue_ids: Sequence[int]) -> list[Record]:
        return list(await conn.fetch(query("batch_item_contexts"), list(queue_ids)))

    async def prepare_batch_items(
        self,
        conn: Conn,
        *,
        queue_ids: Sequence[int],
        keys: Sequence[str],
        sizes: Sequence[int],
    ) -> None:
        await conn.execute(query("prepare_batch_items"), list(queue_ids), list(keys), list(sizes))

    async def running_batches_per_key(
        self, conn: Conn, *, tenant_id: str, action_id: str, keys: Sequence[str]
    ) -> dict[str, int]:
        rows = await conn.fetch(
            query("running_batches_per_key"), tenant_id, action_id, sorted(set(keys))
        )
        return {r["batch_key"]: r["running"] for r in rows}

    async def assign_batch(
        self,
        conn: Conn,
        *,
        queue_ids: Sequence[int],
        worker_id: str,
        batch_id: str,
        batch_key: str,
    ) -> list[Record]:
        return list(
            await conn.fetch(query("assign_batch"), list(queue_ids), worker_id, batch_id, batch_key)
        )

    async def batch_member_attempts(
        self, *, tenant_id: str, task_ids: Sequence[str]
    ) -> dict[str, Record]:
        rows = await self.pool.fetch(query("batch_member_attempts"), tenant_id, list(task_ids))
        return {str(r["id"]): r for r in rows}

    async def fail_queued_task(
        self, conn: Conn, *, tenant_id: str, task_id: str, error: str
    ) -> Record | None:
        return await conn.fetchrow(query("fail_queued_task"), tenant_id, task_id, error)
