"""Live subscriptions: run results (SubscribeToWorkflowRuns) and run events (streaming).

Run results are answered from three sources, whichever comes first: a check at subscribe
time (the run may be over already), the bus's run-finished signal, and a one-second sweep
of every watched id in a single query (covers signals lost during a listener reconnect).
Each subscriber gets each run's result at most once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from hewer.engine.db.repository import Record, Repository
from hewer.engine.services.outage import log_failure

log = logging.getLogger(__name__)
SWEEP_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class TaskResult:
    task_id: str
    readable_id: str
    status: str
    output: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class RunResult:
    run_id: str
    tasks: tuple[TaskResult, ...]


@dataclass(frozen=True, slots=True)
class RunEvent:
    run_id: str
    task_id: str
    kind: str  # STARTED, COMPLETED, FAILED, CANCELLED, STREAM, or RUN_<status> at the end
    payload: str
    retry_count: int = 0
    index: int | None = None


class ResultWatchers:
    def __init__(self, repo: Repository) -> None:
        self._repo = repo
        # run -> {subscriber queue: the subscriber's tenant}
        self._watchers: dict[str, dict[asyncio.Queue[RunResult], str]] = {}
        self._task: asyncio.Task[None] | None = None
        # runs signalled finished, and runs newly watched that may be finished already:
        # both are answered in batches (one query for many subscriptions)
        self._finished: set[str] = set()
        self._unchecked: set[str] = set()
        self._flush: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._sweep_forever(), name="result-sweeper")

    async def stop(self) -> None:
        for task in (self._task, self._flush):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def watch(self, run_id: str, queue: asyncio.Queue[RunResult], *, tenant_id: str) -> None:
        """Answer ``queue`` once when the run is over (at once if it is over already)."""
        self._watchers.setdefault(run_id, {})[queue] = tenant_id
        self._unchecked.add(run_id)
        self._schedule_flush()

    def forget(self, queue: asyncio.Queue[RunResult]) -> None:
        for run_id in list(self._watchers):
            queues = self._watchers[run_id]
            queues.pop(queue, None)
            if not queues:
                del self._watchers[run_id]

    def on_bus(self, message: dict[str, Any]) -> None:
        run_id = str(message.get("run"))
        if run_id not in self._watchers:
            return
        inline = message.get("result")
        if inline is not None and message.get("tenant"):
            # the local echo of a single-task run carries its result: no read needed
            tasks = tuple(TaskResult(**task) for task in inline)
            self._answer(run_id, owner=str(message["tenant"]), tasks=tasks)
            return
        self._finished.add(run_id)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush is None or self._flush.done():
            self._flush = asyncio.create_task(self._flush_pending())

    async def _flush_pending(self) -> None:
        while self._finished or self._unchecked:
            finished, unchecked = self._finished, self._unchecked
            self._finished, self._unchecked = set(), set()
            try:
                if unchecked - finished:
                    finished |= set(await self._repo.finished_runs(list(unchecked - finished)))
                await self._deliver(list(finished))
            except Exception as exc:
                log_failure("run results", exc, log, "delivering run results (the sweep retries)")

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                if self._watchers:
                    finished = await self._repo.finished_runs(list(self._watchers))
                    if finished:
                        await self._deliver(list(finished))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_failure("run results", exc, log, "result sweep")

    async def _deliver(self, run_ids: list[str]) -> None:
        wanted = [rid for rid in run_ids if rid in self._watchers]
        if not wanted:
            return
        results = await self._repo.run_results(wanted)
        for run_id in wanted:
            rows = results.get(run_id, [])
            if rows:
                tasks = tuple(_task_result(r) for r in rows)
                self._answer(run_id, owner=str(rows[0]["tenant_id"]), tasks=tasks)

    def _answer(self, run_id: str, *, owner: str, tasks: tuple[TaskResult, ...]) -> None:
        # popped only now, after any read: a failed read leaves the watchers for the sweep,
        # and a concurrent delivery finds nothing left to send twice
        queues = self._watchers.pop(run_id, None)
        if not queues:
            return
        result = RunResult(run_id=run_id, tasks=tasks)
        for queue, tenant_id in queues.items():
            if tenant_id == owner:  # another tenant's run id is never answered
                queue.put_nowait(result)


def _task_result(row: Record) -> TaskResult:
    return TaskResult(
        task_id=str(row["id"]),
        readable_id=row["readable_id"],
        status=row["status"],
        output=row["output"],
        error=row["error"],
    )


class EventWatchers:
    """Fan-out of run events to live SubscribeToWorkflowEvents streams (no history)."""

    def __init__(self) -> None:
        self._watchers: dict[str, set[asyncio.Queue[RunEvent]]] = {}

    def watch(self, run_id: str) -> asyncio.Queue[RunEvent]:
        queue: asyncio.Queue[RunEvent] = asyncio.Queue()
        self._watchers.setdefault(run_id, set()).add(queue)
        return queue

    def forget(self, run_id: str, queue: asyncio.Queue[RunEvent]) -> None:
        queues = self._watchers.get(run_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self._watchers[run_id]

    def on_event(self, message: dict[str, Any]) -> None:
        queues = self._watchers.get(str(message.get("run")))
        if not queues:
            return
        event = RunEvent(
            run_id=str(message["run"]),
            task_id=str(message.get("task", "")),
            kind=str(message.get("kind", "")),
            payload=str(message.get("payload", "")),
            retry_count=int(message.get("retry", 0) or 0),
            index=message.get("index"),
        )
        for queue in queues:
            queue.put_nowait(event)

    def on_run_finished(self, message: dict[str, Any]) -> None:
        run_id = str(message.get("run"))
        queues = self._watchers.get(run_id)
        if not queues:
            return
        event = RunEvent(run_id=run_id, task_id="", kind=f"RUN_{message.get('status')}", payload="")
        for queue in queues:
            queue.put_nowait(event)
