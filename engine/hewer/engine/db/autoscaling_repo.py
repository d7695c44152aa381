"""Reads behind task-stats and the WorkerPool autoscaler (``sql/queries/autoscaling.sql``).

Every statement filters on the tenant; "queued" is runnable work only (see the SQL file).
"""

from __future__ import annotations

from collections.abc import Sequence

from hewer.engine.db.base import Record, RepositoryBase
from hewer.engine.db.queries import query


class AutoscalingQueries(RepositoryBase):
    async def runnable_queued_by_task(self, tenant_id: str) -> list[Record]:
        return list(await self.pool.fetch(query("runnable_queued_by_task"), tenant_id))

    async def running_by_task(self, tenant_id: str) -> list[Record]:
        return list(await self.pool.fetch(query("running_by_task"), tenant_id))

    async def pool_work(self, tenant_id: str, workflows: Sequence[str]) -> Record:
        row = await self.pool.fetchrow(query("pool_work"), tenant_id, list(workflows))
        assert row is not None  # an aggregate over FROM queued, running: always one row
        return row

    async def pool_workers(self, tenant_id: str, pool: str) -> list[Record]:
        return list(await self.pool.fetch(query("pool_workers"), tenant_id, pool))
