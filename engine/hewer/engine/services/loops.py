"""A background pass that runs again at its next deadline, not on a fixed poll.

The timers (execution and schedule timeouts, dead workers) and the ticker (crons, scheduled
runs, pause TTLs) share this shape: run a pass, ask the database when the next thing is due,
sleep until then (at most ``max_sleep``) unless woken earlier.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from hewer.engine.services.outage import log_failure, outage_log

log = logging.getLogger(__name__)
MIN_SLEEP = 0.01  # a deadline that a pass cannot clear must not spin the loop


class DeadlineLoop:
    def __init__(self, *, name: str, max_sleep: float = 1.0) -> None:
        self._loop_name = name
        self._max_sleep = max_sleep
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def run_once(self) -> None:
        raise NotImplementedError

    def pass_failed(self, exc: Exception) -> None:
        """Called after a failed pass (already logged); subclasses may react."""

    async def seconds_to_next(self) -> float | None:
        """Seconds until the next deadline (None: nothing pending)."""
        return None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self._loop_name)

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            # cleared before the pass: a wake-up that arrives during it runs the next pass now
            self._wake.clear()
            try:
                await self.run_once()
                due = await self.seconds_to_next()
                sleep = self._max_sleep if due is None else min(self._max_sleep, due)
                outage_log(self._loop_name).succeeded()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_failure(self._loop_name, exc, log, f"{self._loop_name} pass")
                self.pass_failed(exc)
                sleep = self._max_sleep
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(MIN_SLEEP, sleep))
