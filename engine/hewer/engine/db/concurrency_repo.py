"""Concurrency admission: slots, the admission pass's reads and writes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hewer.engine.core.rate_limits import ResolvedLimit
from hewer.engine.db.base import Conn, Record, RepositoryBase
from hewer.engine.db.queries import query


@dataclass(frozen=True, slots=True)
class NewSlot:
    holder_id: str
    holder_kind: str  # "task" or "run"
    run_id: str
    retry_count: int
    position: int
    strategy_id: str
    strategy: str
    max_runs: int
    key: str
    priority: int
    delay_seconds: float
    schedule_timeout_seconds: int
    expression: str


class ConcurrencyQueries(RepositoryBase):
    async def insert_concurrency_slots(
        self, conn: Conn, *, tenant_id: str, slots: Sequence[NewSlot]
    ) -> None:
        if not slots:
            return
        await conn.execute(
            query("insert_concurrency_slots"),
            tenant_id,
            [s.holder_id for s in slots],
            [s.holder_kind for s in slots],
            [s.run_id for s in slots],
            [s.retry_count for s in slots],
            [s.position for s in slots],
            [s.strategy_id for s in slots],
            [s.strategy for s in slots],
            [s.max_runs for s in slots],
            [s.key for s in slots],
            [s.priority for s in slots],
            [s.delay_seconds for s in slots],
            [s.schedule_timeout_seconds for s in slots],
            [s.expression for s in slots],
        )
        await conn.execute(
            query("mark_gated"),
            sorted({s.holder_id for s in slots if s.holder_kind == "task"}),
            sorted({s.holder_id for s in slots if s.holder_kind == "run"}),
        )

    async def gate_runs(self, conn: Conn, run_ids: Sequence[str]) -> dict[str, Record]:
        rows = await conn.fetch(query("gate_runs"), list(run_ids))
        return {str(r["id"]): r for r in rows}

    async def lock_admission(self, conn: Conn, tenant_id: str) -> None:
        await conn.execute(query("lock_admission"), tenant_id)

    async def admission_candidates(self, conn: Conn, tenant_id: str) -> list[Record]:
        return list(await conn.fetch(query("admission_candidates"), tenant_id))

    async def admit_slots(self, conn: Conn, slot_ids: Sequence[int]) -> list[Record]:
        """Admit slots; returns the holders whose whole chain is now admitted."""
        return list(await conn.fetch(query("admit_slots"), list(slot_ids)))

    async def delete_concurrency_slots(self, conn: Conn, slot_ids: Sequence[int]) -> None:
        await conn.execute(query("delete_concurrency_slots"), list(slot_ids))

    async def admitted_task_entries(self, conn: Conn, task_ids: Sequence[str]) -> list[Record]:
        return list(await conn.fetch(query("admitted_task_entries"), list(task_ids)))

    async def waiting_tasks_of_runs(self, conn: Conn, run_ids: Sequence[str]) -> list[Record]:
        return list(await conn.fetch(query("waiting_tasks_of_runs"), list(run_ids)))

    async def tenants_waiting_admission(self) -> list[str]:
        rows = await self.pool.fetch(query("tenants_waiting_admission"))
        return [str(r["tenant_id"]) for r in rows]

    async def fail_unqueued_tasks(
        self, conn: Conn, *, task_ids: Sequence[str], errors: Sequence[str]
    ) -> list[Record]:
        return list(await conn.fetch(query("fail_unqueued_tasks"), list(task_ids), list(errors)))

    async def concurrency_task_stats(self, tenant_id: str) -> list[Record]:
        return list(await self.pool.fetch(query("concurrency_task_stats"), tenant_id))

    async def upsert_dynamic_rate_limits(
        self, conn: Conn, *, tenant_id: str, limits: Sequence[ResolvedLimit]
    ) -> None:
        await conn.execute(
            query("upsert_dynamic_rate_limits"),
            tenant_id,
            [r.key for r in limits],
            [r.limit for r in limits],
            [r.duration for r in limits],
        )
