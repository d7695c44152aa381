"""Database outages: recognising them, and logging them calmly.

While PostgreSQL is away every loop and every RPC fails at once, each second. Logging each
failure with its traceback floods the log and hides the one fact that matters. A failure
that only says "the database is unavailable" is logged once for the whole process, then as
one summary line per :data:`LOG_INTERVAL_SECONDS` (how many failures, in which components),
and one info line when the database is reachable again. Any other error keeps its traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TypeVar

from hewer.engine.db.base import is_database_unavailable

__all__ = [
    "LOG_INTERVAL_SECONDS",
    "OutageLog",
    "is_database_unavailable",
    "log_failure",
    "outage_log",
    "quiet_database_pool_logs",
    "ride_out",
]

LOG_INTERVAL_SECONDS = 10.0
log = logging.getLogger("hewer.engine.outage")


class _Outage:
    """The process's view of one database outage, shared by every component: the first
    failure is one warning line, then one summary line per interval, then one line when any
    component reaches the database again. (Per-component lines would grow with the number
    of loops and RPC paths, all reporting the same fact.)"""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.down_since: float | None = None
        self.last_logged = 0.0
        self.failures = 0
        self.components: set[str] = set()

    def failed(self, component: str, exc: BaseException) -> None:
        now = time.monotonic()
        self.components.add(component)
        if self.down_since is None:
            self.down_since = self.last_logged = now
            self.failures = 0
            log.warning(
                "database unavailable (noticed by %s), retrying: %s: %s",
                component,
                type(exc).__name__,
                " ".join(str(exc).split())[:200],
            )
            return
        self.failures += 1
        if now - self.last_logged >= self.interval:
            log.warning(
                "database still unavailable after %.0f s: %d failures in %s",
                now - self.down_since,
                self.failures,
                ", ".join(sorted(self.components)),
            )
            self.last_logged, self.failures = now, 0

    def succeeded(self, component: str) -> None:
        if self.down_since is None:
            return
        log.info(
            "database reachable again after %.0f s (first by %s)",
            time.monotonic() - self.down_since,
            component,
        )
        self.down_since, self.failures = None, 0
        self.components.clear()
        for each in list(_COMPONENTS):
            each.reset()


_OUTAGE = _Outage(LOG_INTERVAL_SECONDS)
_COMPONENTS: weakref.WeakSet[OutageLog] = weakref.WeakSet()


class OutageLog:
    """One component's side of the outage: whether it is failing now."""

    def __init__(self, component: str) -> None:
        self.component = component
        self._down = False
        _COMPONENTS.add(self)

    @property
    def down(self) -> bool:
        return self._down

    def failed(self, exc: BaseException) -> None:
        self._down = True
        _OUTAGE.failed(self.component, exc)

    def succeeded(self) -> None:
        # only a component that failed can tell the database is back: some loops succeed
        # without touching it
        if self._down:
            _OUTAGE.succeeded(self.component)
        self._down = False

    def reset(self) -> None:
        self._down = False


_LOGS: dict[str, OutageLog] = {}


def outage_log(component: str) -> OutageLog:
    """The process's outage log for ``component`` (one per name)."""
    found = _LOGS.get(component)
    if found is None:
        found = _LOGS[component] = OutageLog(component)
    return found


def log_failure(component: str, exc: BaseException, logger: logging.Logger, what: str) -> None:
    """Log ``exc``, raised by ``component`` while doing ``what``: calmly if the database is
    unavailable, with its traceback otherwise."""
    if is_database_unavailable(exc):
        outage_log(component).failed(exc)
    else:
        logger.error("%s failed", what, exc_info=exc)


class _PoolFilter(logging.Filter):
    """asyncpg's pool logs each failed reconnect of its idle connections with a traceback;
    while the database is away that goes to the calm outage log instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and is_database_unavailable(exc):
            outage_log("database pool").failed(exc)
            return False
        return True


def quiet_database_pool_logs() -> None:
    pool_log = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, _PoolFilter) for f in pool_log.filters):
        pool_log.addFilter(_PoolFilter())


T = TypeVar("T")
# how long a worker's task report waits for the database before it is answered UNAVAILABLE
RIDE_OUT_SECONDS = 60.0


async def ride_out(
    write: Callable[[], Awaitable[T]], *, component: str, max_seconds: float = RIDE_OUT_SECONDS
) -> T:
    """Run ``write``, retrying while the database is unavailable, for up to ``max_seconds``.

    For the reports a worker sends about its tasks (started, completed, failed): the Hatchet
    SDK answers an UNAVAILABLE by closing its channel, which cancels the other reports in
    flight on it, and those are then lost; a task whose completion is lost runs into its
    timeout and is retried or failed. Holding the report until the database is back keeps
    it. Every other call answers UNAVAILABLE at once."""
    deadline = time.monotonic() + max_seconds
    delay = 0.25
    while True:
        try:
            return await write()
        except Exception as exc:
            if not is_database_unavailable(exc) or time.monotonic() + delay > deadline:
                raise
            outage_log(component).failed(exc)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)
