"""Durable execution end to end: the official SDK as client and as worker.

* A 20 s durable sleep survives a ``kill -9`` of its engine (a new one is started on the
  same database) and of its worker (a new process takes over) while it sleeps: it wakes
  once, on time, and a memo taken before the crash is not taken again. Two runs: one keeps
  its slot while it sleeps (the engine re-queues it when the old worker's heartbeats stop,
  and the new worker replays it), one was evicted before the crash (the engine restores
  it when the sleep ends).
* 200 runs waiting for events hold no regular slot and at most the worker's durable slots
  (each is evicted while it waits), and all complete when their events are pushed.
* A wait's look-back sees an event pushed before the wait only when the window covers it.

The crash scenario needs an engine of its own. It runs in a thread from the module's first
test on, so its 20 s sleep overlaps the other scenarios (on the session engine), and the
last test collects its outcome.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from durable_workflows import (
    EVENT_WAIT,
    LOOK_BACK,
    SLEEP_EVICTED,
    SLEEP_KEPT,
    EventInput,
    LookBackInput,
    SleepInput,
    define_durable,
)
from e2e_support import Engine, WorkerProc, eventually, start_worker
from hatchet_sdk import Hatchet
from hatchet_sdk.clients.admin import WorkflowRunDetail
from hatchet_sdk.clients.rest.models.v1_task_status import V1TaskStatus
from hatchet_sdk.types.trigger import BulkPushEventWithMetadata
from restart_support import kill_engine_hard, own_database

SLEEP_SECONDS = 20
HEARTBEAT_TIMEOUT = 8  # of the crash scenario's engine: the SDK beats every 4 s
WAITERS = 200
DURABLE_SLOTS = 20
REGULAR_SLOTS = 3
FINAL = {V1TaskStatus.COMPLETED, V1TaskStatus.FAILED, V1TaskStatus.CANCELLED}

pytestmark = pytest.mark.timeout(180)

T = TypeVar("T")


# -- the crash scenario (a thread, on an engine of its own) --------------------------------


@dataclass
class CrashOutcome:
    triggered: float  # wall clock just before the trigger
    killed: float  # engine and worker killed
    replaced: float  # the new engine and the new worker are both up
    killed_engine_status: int | None
    old_worker: str
    new_worker: str
    runs: dict[str, str] = field(default_factory=dict)  # workflow name -> run id
    details: dict[str, WorkflowRunDetail] = field(default_factory=dict)


def _poll(probe: Callable[[], T | None], *, within: float, what: str) -> T:
    deadline = time.monotonic() + within
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
        time.sleep(0.2)


def _crash_scenario(mark_dir: Path, stack: contextlib.ExitStack) -> CrashOutcome:
    database = stack.enter_context(
        own_database({"HEWER_HEARTBEAT_TIMEOUT_SECONDS": str(HEARTBEAT_TIMEOUT)})
    )
    tag = uuid.uuid4().hex[:6]
    names = [SLEEP_KEPT, SLEEP_EVICTED]
    first = database.serve()
    old = stack.enter_context(
        start_worker(first, name=f"e2e-durable-old-{tag}", workflows=names, mark_dir=mark_dir)
    )
    hatchet = first.client()
    sleepers = define_durable(hatchet)
    triggered = time.time()
    runs = {
        name: sleepers[name]
        .run(SleepInput(seconds=SLEEP_SECONDS), wait_for_result=False)
        .workflow_run_id
        for name in names
    }

    def evicted() -> bool | None:
        details = hatchet.runs.get_details(runs[SLEEP_EVICTED])
        return any(t.is_evicted for t in details.task_runs.values()) or None

    # both asleep: the kept run holds its slot, the other one's 1 s TTL has evicted it
    _poll(evicted, within=15, what="the evictable sleeper to be evicted")
    _poll(
        lambda: (mark_dir / f"{runs[SLEEP_KEPT]}.memo").exists() or None,
        within=5,
        what="the kept sleeper to start",
    )
    killed = time.time()
    kill_engine_hard(first)
    old.kill_hard()

    second = database.serve()
    new = stack.enter_context(
        start_worker(second, name=f"e2e-durable-new-{tag}", workflows=names, mark_dir=mark_dir)
    )
    replaced = time.time()
    hatchet = second.client()

    def finished() -> dict[str, WorkflowRunDetail] | None:
        details = {name: hatchet.runs.get_details(run) for name, run in runs.items()}
        return details if all(d.status in FINAL for d in details.values()) else None

    details = _poll(finished, within=SLEEP_SECONDS + 40, what="both sleepers to finish")
    return CrashOutcome(
        triggered=triggered,
        killed=killed,
        replaced=replaced,
        killed_engine_status=first.proc.returncode,
        old_worker=old.name,
        new_worker=new.name,
        runs=runs,
        details=details,
    )


@pytest.fixture(scope="module", autouse=True)
def crash_scenario(mark_dir: Path) -> Iterator[concurrent.futures.Future[CrashOutcome]]:
    """Started with the module's first test; engines, workers and database stop at the end."""
    with (
        contextlib.ExitStack() as stack,
        concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="crash") as pool,
    ):
        future = pool.submit(_crash_scenario, mark_dir, stack)
        yield future
        # the pool's exit waits for the thread before the stack stops what it started
        with contextlib.suppress(Exception):
            future.result(timeout=SLEEP_SECONDS + 120)


# -- the session engine's scenarios ---------------------------------------------------------


@pytest.fixture(scope="module")
def durable_worker(engine: Engine, mark_dir: Path) -> Iterator[WorkerProc]:
    with start_worker(
        engine,
        name=f"e2e-durable-{uuid.uuid4().hex[:6]}",
        workflows=[EVENT_WAIT, LOOK_BACK],
        mark_dir=mark_dir,
        slots=REGULAR_SLOTS,
        durable_slots=DURABLE_SLOTS,
    ) as worker:
        yield worker


def notes(mark_dir: Path, run_id: str, what: str) -> list[str]:
    """The lines ``durable_workflows.note`` appended: ``<worker> <invocation>`` each."""
    path = mark_dir / f"{run_id}.{what}"
    return path.read_text().splitlines() if path.exists() else []


async def test_look_back_sees_an_earlier_event_only_inside_its_window_and_scope(
    hatchet: Hatchet, durable_worker: WorkerProc, mark_dir: Path
) -> None:
    task = define_durable(hatchet)[LOOK_BACK]
    key, scope = f"e2e-look-back:{uuid.uuid4().hex[:8]}", f"scope-{uuid.uuid4().hex[:8]}"

    await hatchet.event.aio_push(key, {"n": 1}, scope=scope)
    pushed = time.time()
    covered = await task.aio_run(
        LookBackInput(key=key, scope=scope, look_back_seconds=60), wait_for_result=False
    )
    # the next wait starts more than its 1 s window after the event
    await asyncio.sleep(max(0.0, pushed + 2.5 - time.time()))
    uncovered = await task.aio_run(
        LookBackInput(key=key, scope=scope, look_back_seconds=1), wait_for_result=False
    )
    # the window covers the event, the scope does not
    other_scope = await task.aio_run(
        LookBackInput(key=key, scope=f"{scope}-other", look_back_seconds=60),
        wait_for_result=False,
    )

    assert await asyncio.wait_for(covered.aio_result(), timeout=30) == {"payload": {"n": 1}}

    async def both_wait() -> bool:
        return all(
            notes(mark_dir, ref.workflow_run_id, "waiting") for ref in (uncovered, other_scope)
        )

    await eventually(both_wait, within=30, what="the uncovered and other-scope runs to wait")
    await asyncio.sleep(2.0)  # their waits are registered well within this; the event is older
    status = await hatchet.runs.aio_get_status(uncovered.workflow_run_id)
    assert status == V1TaskStatus.RUNNING, "a wait saw an event older than its look-back"
    status = await hatchet.runs.aio_get_status(other_scope.workflow_run_id)
    assert status == V1TaskStatus.RUNNING, "a look-back saw an event of another scope"

    await hatchet.event.aio_push(key, {"n": 2}, scope=scope)
    assert await asyncio.wait_for(uncovered.aio_result(), timeout=30) == {"payload": {"n": 2}}
    await hatchet.event.aio_push(key, {"n": 3}, scope=f"{scope}-other")
    assert await asyncio.wait_for(other_scope.aio_result(), timeout=30) == {"payload": {"n": 3}}


@dataclass
class SlotUsage:
    most: dict[str, int] = field(default_factory=dict)  # slot type -> most used at once
    now: dict[str, int] = field(default_factory=dict)

    async def sample(self, hatchet: Hatchet, worker_id: str) -> None:
        while True:
            worker = await hatchet.workers.aio_get(worker_id)
            for slot_type, config in (worker.slot_config or {}).items():
                used = (config.limit or 0) - (config.available or 0)
                self.now[slot_type] = used
                self.most[slot_type] = max(used, self.most.get(slot_type, 0))
            await asyncio.sleep(0.2)


async def test_waiting_runs_hold_only_durable_slots_and_all_wake(
    hatchet: Hatchet, durable_worker: WorkerProc, mark_dir: Path
) -> None:
    waits = define_durable(hatchet)[EVENT_WAIT]
    tag = uuid.uuid4().hex[:8]
    keys = [f"e2e-durable-wait:{tag}:{i}" for i in range(WAITERS)]
    refs = await waits.aio_run_many(
        [
            waits.create_bulk_run_item(input=EventInput(key=k), additional_metadata={"e2e": tag})
            for k in keys
        ],
        wait_for_result=False,
    )
    key_of = {ref.workflow_run_id: k for ref, k in zip(refs, keys, strict=True)}
    listed = await hatchet.workers.aio_list()
    (worker_id,) = [w.metadata.id for w in listed.rows or [] if w.name == durable_worker.name]
    usage = SlotUsage()
    sampler = asyncio.create_task(usage.sample(hatchet, worker_id))
    try:

        async def all_waiting() -> bool:
            return all(notes(mark_dir, run, "waiting") for run in key_of)

        await eventually(all_waiting, within=90, what=f"all {WAITERS} runs to wait")

        async def all_evicted() -> bool:  # so every wait is registered
            return usage.now.get("durable") == 0

        await eventually(all_evicted, within=15, what="every waiting run to be evicted")
        await hatchet.event.aio_bulk_push(
            [BulkPushEventWithMetadata(key=k, payload={"key": k}) for k in keys]
        )

        async def all_done() -> list[Any] | None:
            page = await hatchet.runs.aio_list(
                additional_metadata={"e2e": tag}, only_tasks=True, limit=WAITERS * 2
            )
            rows = page.rows or []
            done = [r for r in rows if r.status in FINAL]
            return rows if len(done) == WAITERS else None

        rows = await eventually(all_done, within=60, interval=0.5, what="all runs to finish")
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler

    assert usage.most.get("default", 0) == 0, usage.most
    assert 0 < usage.most["durable"] <= DURABLE_SLOTS, usage.most
    for row in rows:
        run = row.workflow_run_external_id
        assert row.status == V1TaskStatus.COMPLETED, run
        assert row.output["payload"] == {"key": key_of[run]}, row.output
        # evicted while it waited, restored by its event: a second invocation replayed it
        assert row.output["invocation"] >= 2, row.output


async def test_durable_sleep_survives_engine_and_worker_kill(
    crash_scenario: concurrent.futures.Future[CrashOutcome], mark_dir: Path
) -> None:
    outcome = await asyncio.wait_for(asyncio.wrap_future(crash_scenario), timeout=120)

    assert outcome.killed_engine_status == -9
    # the crash and the replacement both happened while the runs slept
    assert outcome.replaced < outcome.triggered + SLEEP_SECONDS - 3, outcome
    for name, run in outcome.runs.items():
        detail = outcome.details[name]
        assert detail.status == V1TaskStatus.COMPLETED, (name, detail)
        output = detail.task_runs[name].output
        assert output is not None, name
        # on time: the sleep began after the trigger and ended within a second of it
        late = output["woke"] - (outcome.triggered + SLEEP_SECONDS)
        assert 0 <= late <= 1.0, (name, late)
        assert output["worker_name"] == outcome.new_worker, name
        # the memo of the first invocation was replayed, not taken again
        assert output["started"] < outcome.killed, (name, output)
        assert [line.split()[0] for line in notes(mark_dir, run, "memo")] == [outcome.old_worker]
        # the code after the sleep ran once, on the new worker, in a later invocation
        (after,) = notes(mark_dir, run, "after-sleep")
        worker, invocation = after.split()
        assert worker == outcome.new_worker and int(invocation) >= 2, (name, after)
        invoked = notes(mark_dir, run, "invoked")
        assert invoked[0].split()[0] == outcome.old_worker, (name, invoked)
        assert invoked[-1] == after, (name, invoked)
