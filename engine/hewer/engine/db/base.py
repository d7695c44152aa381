"""Shared pieces of the repository: connection types, row shapes, the pool.

Services compose units of work out of these primitives inside :meth:`Repository.transaction`;
each primitive is one named statement (see ``sql/queries``), so a unit of work costs as many
round trips as it has primitives, and batched primitives take arrays (``unnest``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import asyncpg

from hewer.engine.core.dag import NewTask
from hewer.engine.db.queries import query
from hewer.engine.db.transactions import notify, savepoint, top_level

if TYPE_CHECKING:
    # a connection checked out of the pool, on which the statements of a unit of work run
    Conn: TypeAlias = (
        asyncpg.pool.PoolConnectionProxy[asyncpg.Record] | asyncpg.Connection[asyncpg.Record]
    )
else:
    Conn = asyncpg.Connection
Record = asyncpg.Record
# errors after which the whole transaction rolled back and may simply be run again
RETRYABLE_ERRORS = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.execute(query("engine_session"))


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's default RESET ALL round trip.

    The only session state of a pooled connection is what ``_init_connection`` set for its
    whole life (queries/planning.sql ``engine_session``), which a reset would undo; no code
    sets settings, LISTEN or prepared cursors on a checkout, and the one session advisory lock
    (retention) is released explicitly. The default reset cost one extra round trip per
    checkout, several percent of engine time under load.
    """


async def create_pool(dsn: str, *, size: int) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn, min_size=min(2, size), max_size=size, init=_init_connection, reset=_keep_session
    )
    assert pool is not None
    return pool


@dataclass(frozen=True, slots=True)
class NewRun:
    """A run to insert together with its initial tasks."""

    id: str
    workflow_id: str
    version_id: str
    input_json: str
    metadata_json: str
    priority: int
    parent_task_id: str | None = None
    parent_run_id: str | None = None
    child_index: int | None = None
    child_key: str | None = None
    dedupe_key: str | None = None
    desired_worker_id: str | None = None
    event_id: str | None = None
    event_key: str | None = None
    # trigger-time desired worker labels (core.placement's stored form), replacing the steps'
    desired_worker_labels: str | None = None


@dataclass(frozen=True, slots=True)
class NewTaskRow:
    id: str
    run_id: str
    task: NewTask
    priority: int
    desired_worker_id: str | None = None


@dataclass(frozen=True, slots=True)
class QueueEntry:
    task_id: str
    retry_count: int
    action_id: str
    priority: int
    slot_requests: dict[str, int]
    desired_worker_id: str | None
    delay_seconds: float
    schedule_timeout_seconds: int
    rate_limits: str | None = None  # JSON list of ResolvedLimit, when the step has any


@dataclass(frozen=True, slots=True)
class TaskEvent:
    task_id: str
    run_id: str
    retry_count: int
    event_type: str
    message: str = ""
    output: str | None = None
    worker_id: str | None = None


class WriteObserver(Protocol):
    """Told about the task events and finished runs the repository writes: the engine's
    metrics (``services/metrics.py``), passed in by the assembly so db imports no service."""

    def task_events(self, tenant_id: str, events: Iterable[Any]) -> None: ...

    def run_finished(
        self, tenant_id: str, workflow_name: str, status: str, duration_ms: float
    ) -> None: ...


class RepositoryBase:
    """What every repository mixin relies on: the pool and the write observer."""

    pool: asyncpg.Pool
    observer: WriteObserver

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        """A transaction of its own; its notifications go with its COMMIT (transactions.py)."""
        async with self.pool.acquire() as conn, top_level(conn):
            yield conn

    @asynccontextmanager
    async def generic_plan_transaction(self) -> AsyncIterator[Conn]:
        """:meth:`transaction` whose statements all use generic plans (the scheduler's
        round and the completions that may assign, queries/planning.sql), set in the round
        trip of its BEGIN."""
        async with (
            self.pool.acquire() as conn,
            top_level(conn, begin=query("begin_with_generic_plans")),
        ):
            yield conn

    @asynccontextmanager
    async def unit(self, conn: Conn | None) -> AsyncIterator[Conn]:
        """A unit of work: a transaction of its own, or a savepoint in the caller's ``conn``
        (so the caller can make it part of a larger one, e.g. admission's cancellations)."""
        if conn is None:
            async with self.transaction() as own:
                yield own
        else:
            async with savepoint(conn):
                yield conn

    async def notify(self, conn: Conn, *, channel: str, payload: str) -> None:
        """NOTIFY; inside :meth:`transaction` it is sent with the COMMIT."""
        await notify(conn, channel=channel, payload=payload)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        async with self.pool.acquire() as conn:
            yield conn


# What a database that is down, restarting or unreachable raises: the connection failing or
# closing under us, the server refusing connections while it starts or shuts down, a full
# connection table. Everything else is a real error in the statement or the data.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable, DNS, timeouts (TimeoutError is an OSError)
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # "connection is closed", "pool is closing"
    asyncpg.exceptions.OperatorInterventionError,  # admin/crash shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections
)


def is_database_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` means the database cannot be reached now (worth retrying later)."""
    return isinstance(exc, _UNAVAILABLE)
