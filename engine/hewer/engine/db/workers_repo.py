"""Workers, pushed events, log lines, tenants and tokens, bus payloads."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from hewer.engine.db.base import (
    Conn,
    Record,
    RepositoryBase,
)
from hewer.engine.db.queries import query


class WorkerQueries(RepositoryBase):
    # -- tenants and tokens ---------------------------------------------------------------

    async def ensure_tenant(self, name: str) -> str:
        return str(await self.pool.fetchval(query("ensure_tenant"), name))

    async def get_tenant(self, tenant_id: str) -> Record | None:
        return await self.pool.fetchrow(query("get_tenant"), tenant_id)

    async def get_tenant_by_name(self, name: str) -> Record | None:
        return await self.pool.fetchrow(query("get_tenant_by_name"), name)

    async def ensure_secret(self, name: str, value: bytes) -> bytes:
        return bytes(await self.pool.fetchval(query("ensure_secret"), name, value))

    async def insert_api_token(
        self, *, token_id: str, tenant_id: str, name: str, expires_at: datetime
    ) -> None:
        await self.pool.execute(query("insert_api_token"), token_id, tenant_id, name, expires_at)

    async def get_api_token(self, token_id: str) -> Record | None:
        return await self.pool.fetchrow(query("get_api_token"), token_id)

    async def revoke_api_token(self, token_id: str) -> bool:
        return await self.pool.fetchval(query("revoke_api_token"), token_id) is not None

    # -- bus ------------------------------------------------------------------------------

    async def park_bus_payload(self, conn: Conn | None, body: str) -> int:
        return int(await (conn or self.pool).fetchval(query("park_bus_payload"), body))

    async def prune_bus_payloads(self) -> None:
        await self.pool.execute(query("prune_bus_payloads"))

    async def fetch_bus_payload(self, ref: int) -> str | None:
        body = await self.pool.fetchval(query("fetch_bus_payload"), ref)
        return None if body is None else str(body)

    # -- workers ------------------------------------------------------------------------------

    async def insert_worker(
        self,
        *,
        worker_id: str,
        tenant_id: str,
        name: str,
        actions: Sequence[str],
        slot_config: dict[str, int],
        labels: dict[str, Any],
        runtime_info: dict[str, Any],
    ) -> None:
        await self.pool.execute(
            query("insert_worker"),
            worker_id,
            tenant_id,
            name,
            list(actions),
            slot_config,
            labels,
            runtime_info,
        )

    async def get_worker(self, *, tenant_id: str, worker_id: str) -> Record | None:
        return await self.pool.fetchrow(query("get_worker"), worker_id, tenant_id)

    async def worker_heartbeat(self, *, tenant_id: str, worker_id: str) -> Record | None:
        return await self.pool.fetchrow(query("worker_heartbeat"), worker_id, tenant_id)

    async def worker_heartbeats(
        self, *, worker_ids: Sequence[str], tenant_ids: Sequence[str], ages: Sequence[float]
    ) -> list[Record]:
        """Store many heartbeats at once; ``ages``: seconds since each beat arrived. Returns
        the workers found, with their listener state."""
        return list(await self.pool.fetch(query("worker_heartbeats"), worker_ids, tenant_ids, ages))

    async def worker_listening(self, *, tenant_id: str, worker_id: str, engine_id: str) -> bool:
        row = await self.pool.fetchval(query("worker_listening"), worker_id, tenant_id, engine_id)
        return row is not None

    async def worker_disconnected(self, *, worker_id: str, engine_id: str) -> None:
        await self.pool.execute(query("worker_disconnected"), worker_id, engine_id)

    async def merge_worker_labels(
        self, *, tenant_id: str, worker_id: str, labels: dict[str, Any]
    ) -> bool:
        row = await self.pool.fetchval(query("merge_worker_labels"), worker_id, tenant_id, labels)
        return row is not None

    async def release_slot(self, *, tenant_id: str, task_id: str) -> str | None:
        value = await self.pool.fetchval(query("release_slot"), task_id, tenant_id)
        return None if value is None else str(value)

    # -- events and logs ----------------------------------------------------------------------

    async def insert_log_line(
        self,
        *,
        tenant_id: str,
        task_id: str,
        retry_count: int | None,
        level: str,
        message: str,
        metadata: dict[str, Any],
        created_at: datetime,
    ) -> bool:
        value = await self.pool.fetchval(
            query("insert_log_line"),
            tenant_id,
            task_id,
            retry_count,
            level,
            message,
            metadata,
            created_at,
        )
        return value is not None
