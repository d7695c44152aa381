"""Work of one stream run side by side, except where order matters.

A worker's ``DurableTask`` stream carries the requests of all the durable tasks it runs.
One task's requests must be answered in the order they came (each moves that task's log
on), but answering every task's requests one after another made each wait behind all the
others' database round trips. Each key (a task) is a lane: lanes run concurrently, a
lane's work in submission order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Lanes:
    """At most ``limit`` pieces of work at once (each may hold a database connection)."""

    def __init__(self, *, limit: int) -> None:
        self._permits = asyncio.Semaphore(limit)
        self._running: set[asyncio.Task[None]] = set()
        self._last: dict[str, asyncio.Task[None]] = {}

    def submit(self, lane: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` after the lane's earlier work has finished (however it finished)."""
        task = asyncio.create_task(self._after(self._last.get(lane), work))
        self._last[lane] = task
        self.track(task)
        task.add_done_callback(lambda done: self._forget(lane, done))

    def track(self, task: asyncio.Task[None]) -> None:
        """Work outside the lanes that ``drain`` waits for and ``cancel`` stops too."""
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def drain(self) -> None:
        if self._running:
            await asyncio.wait(set(self._running))

    def cancel(self) -> None:
        for task in list(self._running):
            task.cancel()

    async def _after(
        self, previous: asyncio.Task[None] | None, work: Callable[[], Awaitable[None]]
    ) -> None:
        if previous is not None:
            await asyncio.wait({previous})
        async with self._permits:
            try:
                await work()
            except Exception:  # the lane goes on; nobody else would see the error
                log.exception("work of a stream failed")

    def _forget(self, lane: str, done: asyncio.Task[None]) -> None:
        if self._last.get(lane) is done:
            del self._last[lane]
