"""A dedicated LISTEN connection (kept apart from the pool: it must stay open)."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg


class Listener:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    @classmethod
    async def open(cls, dsn: str, *, channel: str, on_message: Callable[[str], None]) -> Listener:
        conn = await asyncpg.connect(dsn)
        await conn.add_listener(channel, lambda _c, _pid, _ch, payload: on_message(payload))
        return cls(conn)

    @property
    def is_open(self) -> bool:
        return not self._conn.is_closed()

    async def ping(self) -> None:
        await self._conn.execute("SELECT 1")

    async def close(self) -> None:
        if not self._conn.is_closed():
            await self._conn.close()
