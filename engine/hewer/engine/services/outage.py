"""Database outages: recognising them, and logging them calmly.

While PostgreSQL is away every loop and every RPC fails at once, each second. Logging each
failure with its traceback floods the log and hides the one fact that matters, so a failure
that only says "the database is unavailable" is logged as one warning line per component per
:data:`LOG_INTERVAL_SECONDS` (with the number of failures in between), and one info line when
that component reaches the database again. Any other error keeps its traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
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


class OutageLog:
    def __init__(self, component: str, *, interval: float = LOG_INTERVAL_SECONDS) -> None:
        self.component = component
        self._interval = interval
        self._down_since: float | None = None
        self._last_logged = 0.0
        self._suppressed = 0

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
        elif now - self._last_logged < self._interval:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more failures)" if self._suppressed else ""
        log.warning(
            "%s: database unavailable, retrying: %s: %s%s",
            self.component,
            type(exc).__name__,
            " ".join(str(exc).split())[:200],
            more,
        )
        self._last_logged, self._suppressed = now, 0

    def succeeded(self) -> None:
        if self._down_since is None:
            return
        log.info(
            "%s: database reachable again after %.0f s",
            self.component,
            time.monotonic() - self._down_since,
        )
        self._down_since, self._suppressed = None, 0


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
