"""Transactions, savepoints and the notifications they send at commit.

A NOTIFY inside a transaction is delivered when it commits, so sending it earlier buys
nothing; each one still cost a round trip. Inside :func:`top_level` a notification is held
back (:func:`notify`) and sent with the COMMIT, in one simple query: a completion
transaction is BEGIN, its writes and COMMIT, whatever it publishes.

The transactions are begun and ended by hand rather than with ``Connection.transaction()``
so that the BEGIN can carry settings (the scheduler's generic plans) and the COMMIT the
notifications; savepoints inside them are handled here too (:func:`savepoint`), because
asyncpg refuses its own transaction object inside a transaction it did not start.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from hewer.engine.db.queries import query

if TYPE_CHECKING:
    from hewer.engine.db.base import Conn

# The notifications each open transaction holds back, by the id of the connection proxy it
# runs on (one proxy per checkout; the entry goes when the transaction ends).
_AT_COMMIT: dict[int, list[tuple[str, str]]] = {}
_SAVEPOINTS = itertools.count(1)


def _quoted(text: str) -> str:
    """A dollar-quoted SQL literal of ``text``, whatever the quoting settings."""
    for n in itertools.count():
        tag = f"$n{n}$"
        if tag not in text:
            return f"{tag}{text}{tag}"
    raise AssertionError("unreachable")


def commit_statement(held: list[tuple[str, str]]) -> str:
    """COMMIT, preceded by the held notifications (in the order they were made)."""
    sends = "".join(
        f"SELECT pg_notify({_quoted(channel)}, {_quoted(payload)});" for channel, payload in held
    )
    return f"{sends}COMMIT"


async def _abandon(conn: Conn) -> None:
    """Roll back after a failure; a connection that may still be inside the transaction is
    closed, since the pool hands sessions out as they are (base._keep_session)."""
    try:
        if conn.is_in_transaction():
            await conn.execute("ROLLBACK")
    except BaseException:
        conn.terminate()
        raise


@asynccontextmanager
async def top_level(conn: Conn, *, begin: str = "BEGIN") -> AsyncIterator[None]:
    """A transaction on ``conn`` begun by the simple query ``begin``."""
    await conn.execute(begin)
    held: list[tuple[str, str]] = []
    _AT_COMMIT[id(conn)] = held
    try:
        try:
            yield
        finally:
            del _AT_COMMIT[id(conn)]
        await conn.execute(commit_statement(held))
    except BaseException:
        await _abandon(conn)
        raise


@asynccontextmanager
async def savepoint(conn: Conn) -> AsyncIterator[None]:
    """A savepoint in the transaction ``conn`` is in (a transaction of its own when it is in
    none); rolling it back also drops the notifications made inside it."""
    if not conn.is_in_transaction():
        async with top_level(conn):
            yield
        return
    name = f"hewer_sp_{next(_SAVEPOINTS)}"
    held = _AT_COMMIT.get(id(conn))
    mark = len(held) if held is not None else 0
    await conn.execute(f"SAVEPOINT {name}")
    try:
        yield
    except BaseException:
        if conn.is_in_transaction():
            await conn.execute(f"ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}")
        if held is not None:
            del held[mark:]
        raise
    await conn.execute(f"RELEASE SAVEPOINT {name}")


async def notify(conn: Conn, *, channel: str, payload: str) -> None:
    """NOTIFY; inside :func:`top_level` it goes with the COMMIT (delivered then either way)."""
    held = _AT_COMMIT.get(id(conn))
    if held is not None:
        held.append((channel, payload))
    else:
        await conn.execute(query("notify"), channel, payload)
