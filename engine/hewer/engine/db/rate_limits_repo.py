"""Rate-limit buckets: locked, debited and the items they hold back deferred, in the
scheduler's claim transaction."""

from __future__ import annotations

from collections.abc import Sequence

from hewer.engine.db.base import Conn, Record, RepositoryBase
from hewer.engine.db.queries import query


class RateLimitQueries(RepositoryBase):
    async def lock_rate_limits(
        self, conn: Conn, *, tenant_id: str, keys: Sequence[str]
    ) -> list[Record]:
        return list(await conn.fetch(query("lock_rate_limits"), tenant_id, list(keys)))

    async def database_now(self, conn: Conn) -> float:
        """The transaction's ``now()`` as epoch seconds (the clock bucket windows use)."""
        return float(await conn.fetchval(query("database_now")))

    async def rate_limit_values(self, *, tenant_id: str, keys: Sequence[str]) -> dict[str, int]:
        rows = await self.pool.fetch(query("rate_limit_values"), tenant_id, list(keys))
        return {r["key"]: int(r["limit_value"]) for r in rows}

    async def save_rate_limit_usage(
        self,
        conn: Conn,
        *,
        tenant_id: str,
        keys: Sequence[str],
        used: Sequence[int],
        window_started: Sequence[float],
    ) -> None:
        await conn.execute(
            query("save_rate_limit_usage"), tenant_id, list(keys), list(used), list(window_started)
        )

    async def defer_rate_limited(
        self,
        conn: Conn,
        *,
        tenant_id: str,
        queue_ids: Sequence[int],
        until: Sequence[float],
        reasons: Sequence[str],
    ) -> None:
        await conn.execute(
            query("defer_rate_limited"), tenant_id, list(queue_ids), list(until), list(reasons)
        )
