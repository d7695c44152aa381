"""Group concurrent requests into one unit of work.

Each caller awaits its own result; whatever arrives while a batch is being written joins the
next one. An idle engine therefore writes at once (no timer, no added latency), and a busy
one writes hundreds of outcomes per transaction instead of one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

from hewer.engine.db.base import RETRYABLE_ERRORS
from hewer.engine.services.outage import log_failure

log = logging.getLogger(__name__)
Item = TypeVar("Item")
Result = TypeVar("Result")
Key = TypeVar("Key", bound=Hashable)
MAX_ATTEMPTS = 3


class Batcher(Generic[Item, Result]):
    def __init__(
        self,
        process: Callable[[list[Item]], Awaitable[Sequence[Result | BaseException]]],
        *,
        max_batch: int = 500,
        name: str = "batch",
    ) -> None:
        self._process = process
        self._max = max_batch
        self._name = name
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain(), name=self._name)
        return await future

    async def _drain(self) -> None:
        while self._waiting:
            batch = self._waiting[: self._max]
            del self._waiting[: self._max]
            results = await self._run([item for item, _ in batch])
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def _run(self, items: list[Item]) -> Sequence[Result | BaseException]:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                results = await self._process(items)
            except RETRYABLE_ERRORS as exc:
                # another replica locked the same rows in another order: the whole
                # transaction rolled back, so running it again is safe
                if attempt == MAX_ATTEMPTS:
                    return [exc] * len(items)
                log.info("%s batch of %d hit %s; retrying", self._name, len(items), exc)
                continue
            except Exception as exc:
                log_failure(self._name, exc, log, f"{self._name} batch of {len(items)}")
                return [exc] * len(items)
            if len(results) != len(items):
                error = RuntimeError(f"{self._name}: {len(results)} results for {len(items)}")
                return [error] * len(items)
            return results
        raise AssertionError("unreachable")


class Repeats(Generic[Key]):
    """Answers a repeated request from memory with the outcome of the first one.

    For idempotent writes whose repeats change nothing (the SDK reports each start twice): a
    repeat shares the first request's outcome, also while it is still being written. A
    failure is forgotten, so a later repeat tries again. The newest ``size`` keys are kept.
    """

    def __init__(self, *, size: int) -> None:
        self._size = size
        self._outcomes: OrderedDict[Key, asyncio.Future[None]] = OrderedDict()

    async def once(self, key: Key, write: Callable[[], Awaitable[None]]) -> None:
        outcome = self._outcomes.get(key)
        if outcome is None:
            outcome = asyncio.ensure_future(write())
            outcome.add_done_callback(lambda done: self._forget_failure(key, done))
            self._outcomes[key] = outcome
            if len(self._outcomes) > self._size:
                self._outcomes.popitem(last=False)
        await asyncio.shield(outcome)

    def _forget_failure(self, key: Key, done: asyncio.Future[None]) -> None:
        failed = done.cancelled() or done.exception() is not None
        if failed and self._outcomes.get(key) is done:
            del self._outcomes[key]
