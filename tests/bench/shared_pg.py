"""Helpers for benchmarks that run against a shared PostgreSQL (``--database-url``).

Hewer and a peer queue measured on one server share its hardware and its durability settings,
so their figures compare. Each run gets a database of its own, created here and dropped
afterwards, so no run starts on another run's tables, dead tuples or statistics.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

__all__ = [
    "ServerInfo",
    "drop_database",
    "fresh_database",
    "postmaster_pid_file",
    "server_info",
    "with_database",
]


@dataclass(frozen=True)
class ServerInfo:
    version: str
    synchronous_commit: str
    fsync: str

    def describe(self) -> str:
        return (
            f"PostgreSQL {self.version}, synchronous_commit={self.synchronous_commit}, "
            f"fsync={self.fsync}"
        )

    def as_dict(self) -> dict[str, str]:
        return {
            "version": self.version,
            "synchronous_commit": self.synchronous_commit,
            "fsync": self.fsync,
        }


def with_database(url: str, database: str) -> str:
    """``url`` naming another database on the same server (host, port, user, query kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


async def server_info(url: str) -> ServerInfo:
    conn = await asyncpg.connect(url)
    try:
        return ServerInfo(
            version=str(await conn.fetchval("SHOW server_version")),
            synchronous_commit=str(await conn.fetchval("SHOW synchronous_commit")),
            fsync=str(await conn.fetchval("SHOW fsync")),
        )
    finally:
        await conn.close()


async def postmaster_pid_file(url: str) -> Path | None:
    """The server's ``postmaster.pid`` when it runs on this machine and we may read it.

    With it the benchmark can charge the server's CPU seconds to each phase; a remote or
    unreadable server just goes without that column.
    """
    conn = await asyncpg.connect(url)
    try:
        data_dir = await conn.fetchval("SHOW data_directory")  # superusers only
    except asyncpg.PostgresError:
        return None
    finally:
        await conn.close()
    pid_file = Path(str(data_dir)) / "postmaster.pid"
    with contextlib.suppress(OSError):
        if pid_file.is_file() and pid_file.read_text().strip():
            return pid_file
    return None


async def create_database(url: str, prefix: str) -> str:
    """Create an empty database on ``url``'s server; return its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_database(url: str, name: str) -> None:
    """Drop ``name``; FORCE ends sessions a killed engine or worker may have left behind."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def fresh_database(url: str, prefix: str) -> AsyncIterator[str]:
    """A new database on ``url``'s server for the duration of the block; yields its URL."""
    name = await create_database(url, prefix)
    try:
        yield with_database(url, name)
    finally:
        # shielded: a cancelled run must still not leave its database behind
        await asyncio.shield(drop_database(url, name))
