"""Several engine replicas on one database: every task assigned once, no slot ever exceeded.

Two complete replicas run in-process (own pool, bus, hub and scheduler loop each), each
holding the streams of three workers with five slots. Thousands of single-task runs are
triggered in bulk on both; every worker completes what it receives through a randomly
chosen replica. The schedulers claim from the same queue concurrently.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from tests.integration.harness import FAN_IN, Replica, drain

from hewer.engine.services.triggers import MAX_BULK, TriggerRequest
from hewer.engine.services.workers import ActionKind, ActionMessage, WorkerSession

RUNS = 2000
WORKERS_PER_REPLICA = 3
SLOTS = 5
DEADLINE_SECONDS = 60.0
WORKFLOW = {"name": "bulk", "tasks": [{"readable_id": "work", "action": "bulk:work"}]}

pytestmark = pytest.mark.slow


class Workers:
    """Simulated workers: pull from each outbox, complete after a tiny pause, keep books."""

    def __init__(self, replicas: list[Replica], tenant_id: str, seed: int) -> None:
        self.replicas = replicas
        self.tenant_id = tenant_id
        self.rng = random.Random(seed)
        self.received: dict[str, str] = {}  # task id -> worker that received it
        self.duplicates: list[tuple[str, str]] = []
        self.unexpected: list[ActionMessage] = []
        self.in_flight: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.errors: list[BaseException] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, session: WorkerSession) -> None:
        self._spawn(self._consume(session))

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.errors.append(task.exception())  # type: ignore[arg-type]

    async def _consume(self, session: WorkerSession) -> None:
        while True:
            message = await session.outbox.get()
            if message.kind is not ActionKind.START:
                self.unexpected.append(message)
                continue
            if message.task_id in self.received:
                self.duplicates.append((message.task_id, session.worker_id))
                continue
            self.received[message.task_id] = session.worker_id
            self.in_flight[session.worker_id] += 1
            self.peak[session.worker_id] = max(
                self.peak[session.worker_id], self.in_flight[session.worker_id]
            )
            self._spawn(self._work(session, message))

    async def _work(self, session: WorkerSession, message: ActionMessage) -> None:
        await asyncio.sleep(self.rng.uniform(0, 0.002))
        # counted free before reporting: the engine may reuse the slot once the report
        # commits, so this count never overstates what the engine let the worker hold
        self.in_flight[session.worker_id] -= 1
        await self.rng.choice(self.replicas).lifecycle.completed(
            tenant_id=self.tenant_id,
            task_id=message.task_id,
            retry_count=message.retry_count,
            output='{"ok": true}',
        )


async def repeat(every: float, action: Callable[[], Awaitable[None]]) -> None:
    while True:
        await action()
        await asyncio.sleep(every)


async def test_replicas_assign_every_task_exactly_once_within_slots(dsn: str) -> None:
    replicas = [await Replica.start(dsn, pool_size=8) for _ in range(2)]
    background: list[asyncio.Task[None]] = []
    tenant = await replicas[0].repo.ensure_tenant("tenant-a")
    workers = Workers(replicas, tenant, seed=20260509)
    try:
        await replicas[0].register(tenant, WORKFLOW)
        sessions_of: dict[str, list[WorkerSession]] = {}
        for replica in replicas:
            sessions_of[replica.engine_id] = [
                await replica.connect_worker(
                    tenant, ["bulk:work"], slots={"default": SLOTS}, name=f"w{i}"
                )
                for i in range(WORKERS_PER_REPLICA)
            ]
        sessions = [s for group in sessions_of.values() for s in group]
        for session in sessions:
            workers.start(session)

        async def heartbeat() -> None:  # the scheduler only serves workers beating recently
            for session in sessions:
                await replicas[0].repo.worker_heartbeat(
                    tenant_id=tenant, worker_id=session.worker_id
                )

        peak_held: Counter[str] = Counter()

        async def sample_held_slots() -> None:  # the database's own view, sampled
            rows = await replicas[1].repo.pool.fetch(
                "SELECT worker_id, count(*) AS held FROM tasks WHERE slot_held GROUP BY 1"
            )
            for row in rows:
                worker = str(row["worker_id"])
                peak_held[worker] = max(peak_held[worker], row["held"])

        background.append(asyncio.create_task(repeat(2.0, heartbeat)))
        background.append(asyncio.create_task(repeat(0.05, sample_held_slots)))
        for replica in replicas:
            replica.scheduler.start()

        request = TriggerRequest(workflow_name="bulk", input={"n": 1})
        batches = [
            replicas[i % 2].triggers.trigger(tenant_id=tenant, requests=[request] * MAX_BULK)
            for i in range(RUNS // MAX_BULK)
        ]
        run_ids = [run_id for batch in await asyncio.gather(*batches) for run_id in batch]
        assert len(set(run_ids)) == RUNS

        deadline = time.monotonic() + DEADLINE_SECONDS
        completed = 0
        while completed < RUNS:
            assert not workers.errors, workers.errors
            assert time.monotonic() < deadline, f"only {completed}/{RUNS} runs completed"
            await asyncio.sleep(0.2)
            completed = await replicas[0].repo.pool.fetchval(
                "SELECT count(*) FROM workflow_runs WHERE status = 'COMPLETED'"
            )
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await workers.stop()
        for replica in replicas:
            await replica.close()

    async with asyncpg.create_pool(dsn, min_size=1, max_size=1) as pool:
        assigned = await pool.fetch(
            "SELECT task_id, count(*) AS n, min(worker_id::text) AS worker FROM task_events "
            "WHERE event_type = 'ASSIGNED' GROUP BY task_id"
        )
        statuses = await pool.fetch("SELECT status, count(*) AS n FROM tasks GROUP BY status")
        retried = await pool.fetchval("SELECT count(*) FROM tasks WHERE retry_count <> 0")
        queue_left = await pool.fetchval("SELECT count(*) FROM queue_items")
        run_statuses = await pool.fetch(
            "SELECT status, count(*) AS n FROM workflow_runs GROUP BY status"
        )

    assert not workers.errors
    assert workers.duplicates == []  # no task ever reached two outboxes (or one twice)
    assert workers.unexpected == []
    assert set(workers.received) == set(run_ids)
    # each task assigned exactly once, to the worker whose outbox it reached
    assert len(assigned) == RUNS
    assert [r["task_id"] for r in assigned if r["n"] != 1] == []
    assert {str(r["task_id"]): r["worker"] for r in assigned} == workers.received
    assert {r["status"]: r["n"] for r in statuses} == {"COMPLETED": RUNS}
    assert {r["status"]: r["n"] for r in run_statuses} == {"COMPLETED": RUNS}
    assert (retried, queue_left) == (0, 0)

    # slots were respected, and actually exercised: the workers were saturated
    assert max(workers.peak.values()) <= SLOTS, workers.peak
    assert max(peak_held.values()) <= SLOTS, peak_held
    assert max(workers.peak.values()) == SLOTS
    # both replicas scheduled, and every worker got work
    per_worker = Counter(workers.received.values())
    assert len(per_worker) == len(sessions)
    for engine_id, group in sessions_of.items():
        assert sum(per_worker[s.worker_id] for s in group) > 0, engine_id


async def test_siblings_finishing_at_once_on_two_replicas_create_the_child_once(
    dsn: str,
) -> None:
    replicas = [await Replica.start(dsn, pool_size=8) for _ in range(2)]
    try:
        first = replicas[0]
        tenant = await first.repo.ensure_tenant("tenant-a")
        await first.register(tenant, FAN_IN)
        worker = await first.connect_worker(tenant, ["fan:left", "fan:right", "fan:join"])
        request = TriggerRequest(workflow_name="fan-in", input={})
        run_ids = await first.triggers.trigger(tenant_id=tenant, requests=[request] * 40)
        while await first.scheduler.run_round(tenant):
            pass
        started = drain(worker)
        assert len(started) == 80

        async def complete(replica: Replica, task_id: str) -> None:
            await replica.lifecycle.completed(
                tenant_id=tenant, task_id=task_id, retry_count=0, output="{}"
            )

        # both roots of every run reported at the same moment, one through each replica
        by_run: dict[str, list[str]] = {}
        for message in started:
            by_run.setdefault(message.workflow_run_id, []).append(message.task_id)
        await asyncio.gather(
            *(
                complete(replicas[i % 2], task_id)
                for tasks in by_run.values()
                for i, task_id in enumerate(tasks)
            )
        )
        joins = await first.repo.pool.fetch(
            "SELECT workflow_run_id, count(*) AS n, min(status) AS status FROM tasks "
            "WHERE readable_id = 'join' GROUP BY 1"
        )
        assert {str(r["workflow_run_id"]): (r["n"], r["status"]) for r in joins} == {
            run_id: (1, "QUEUED") for run_id in run_ids
        }
        assert await first.repo.pool.fetchval(
            "SELECT count(*) FROM queue_items WHERE action_id = 'fan:join'"
        ) == len(run_ids)
    finally:
        for replica in replicas:
            await replica.close()
