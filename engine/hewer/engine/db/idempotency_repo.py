"""Idempotency keys: the claim table, and the key each run holds (``idempotency.sql``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hewer.engine.db.base import Conn, RepositoryBase
from hewer.engine.db.queries import query


class IdempotencyQueries(RepositoryBase):
    async def version_idempotency_config(
        self, version_id: str, *, conn: Conn | None = None
    ) -> Mapping[str, Any] | None:
        """The stored registration's ``idempotency`` object of a version, if it has one."""
        value = await (conn or self.pool).fetchval(query("version_idempotency_config"), version_id)
        return value if isinstance(value, Mapping) else None

    async def claim_idempotency_keys(
        self,
        conn: Conn,
        *,
        tenant_id: str,
        keys: Sequence[str],
        run_ids: Sequence[str],
        release_on_finish: Sequence[bool],
        ttl_ms: Sequence[int],
    ) -> set[str]:
        """Claim distinct ``keys`` for ``run_ids``; returns the keys this call now holds."""
        rows = await conn.fetch(
            query("claim_idempotency_keys"),
            tenant_id,
            list(keys),
            list(run_ids),
            list(release_on_finish),
            list(ttl_ms),
        )
        return {r["key"] for r in rows}

    async def idempotency_key_holders(
        self, conn: Conn, *, tenant_id: str, keys: Sequence[str]
    ) -> dict[str, str]:
        rows = await conn.fetch(query("idempotency_key_holders"), tenant_id, list(keys))
        return {r["key"]: str(r["run_id"]) for r in rows}

    async def mark_idempotent_runs(
        self, conn: Conn, *, run_ids: Sequence[str], keys: Sequence[str]
    ) -> None:
        await conn.execute(query("mark_idempotent_runs"), list(run_ids), list(keys))

    async def release_idempotency_claims(
        self, conn: Conn, *, tenant_id: str, run_ids: Sequence[str]
    ) -> None:
        await conn.execute(query("release_idempotency_claims"), tenant_id, list(run_ids))

    async def delete_expired_idempotency_keys(self, *, limit: int) -> int:
        return len(await self.pool.fetch(query("delete_expired_idempotency_keys"), limit))
