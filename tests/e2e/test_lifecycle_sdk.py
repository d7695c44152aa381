"""A run's life with a real SDK worker: DAG inputs, retries, cancellation, worker pause."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from e2e_support import Engine, WorkerProc, eventually, mark_names, marks, start_worker
from e2e_workflows import CANCELLABLE, DAG, PAUSABLE, RETRY, DagInput
from hatchet_sdk import Hatchet
from hatchet_sdk.clients.admin import WorkflowRunDetail
from hatchet_sdk.clients.rest.models.v1_task_status import V1TaskStatus

pytestmark = pytest.mark.timeout(120)


async def _details(hatchet: Hatchet, run_id: str) -> WorkflowRunDetail:
    return await hatchet.runs.aio_get_details(run_id)


async def _wait_status(
    hatchet: Hatchet, run_id: str, statuses: set[V1TaskStatus], within: float
) -> WorkflowRunDetail:
    async def probe() -> WorkflowRunDetail | None:
        d = await _details(hatchet, run_id)
        return d if d.status in statuses else None

    return await eventually(probe, within=within, what=f"run {run_id} in {statuses}")


async def test_dag_children_receive_parent_outputs(
    hatchet: Hatchet, workflows: dict[str, Any], main_worker: WorkerProc
) -> None:
    result = await asyncio.wait_for(workflows[DAG].aio_run(DagInput(n=7)), timeout=60)

    assert result["first"] == {"value": 7}
    assert result["second"] == {"value": 70}
    # `total` read both parents' outputs from its action payload
    assert result["total"] == {"sum": 77, "seen": {"first": {"value": 7}, "second": {"value": 70}}}


async def test_retries_until_success(
    hatchet: Hatchet,
    workflows: dict[str, Any],
    main_worker: WorkerProc,
    mark_dir: Path,
) -> None:
    ref = await workflows[RETRY].aio_run(wait_for_result=False)
    result = await asyncio.wait_for(ref.aio_result(), timeout=60)

    # two planned failures, then success on the third attempt (retries=2)
    assert result == {"attempt": 3, "retry_count": 2}
    assert sorted(marks(mark_dir, ref.workflow_run_id, "attempt")) == [1, 2, 3]
    details = await _details(hatchet, ref.workflow_run_id)
    assert details.status == V1TaskStatus.COMPLETED
    assert details.task_runs[RETRY].error is None


async def test_cancel_running_task_reaches_the_worker(
    hatchet: Hatchet,
    workflows: dict[str, Any],
    main_worker: WorkerProc,
    mark_dir: Path,
) -> None:
    ref = await workflows[CANCELLABLE].aio_run(wait_for_result=False)
    run_id = ref.workflow_run_id

    async def started() -> dict[int, str] | None:
        return marks(mark_dir, run_id, "started") or None

    await eventually(started, within=30, what="the cancellable task to start")
    assert (await _details(hatchet, run_id)).status == V1TaskStatus.RUNNING

    await hatchet.runs.aio_cancel(run_id)

    details = await _wait_status(hatchet, run_id, {V1TaskStatus.CANCELLED}, within=15)
    assert details.done
    assert details.task_runs[CANCELLABLE].status == V1TaskStatus.CANCELLED

    # the worker got CANCEL_STEP_RUN: the context flag is set, then the coroutine cancelled
    async def observed() -> bool:
        return bool(marks(mark_dir, run_id, "flag")) and bool(marks(mark_dir, run_id, "cancelled"))

    try:
        await eventually(observed, within=15, what="the worker to observe the cancellation")
    except AssertionError as exc:
        seen = mark_names(mark_dir, run_id)
        raise AssertionError(f"{exc}; marks: {seen}\n{main_worker.log()}") from None
    # and the late outcome of the cancelled attempt did not resurrect the run
    await asyncio.sleep(1)
    assert (await _details(hatchet, run_id)).status == V1TaskStatus.CANCELLED


async def test_paused_worker_gets_no_new_work(
    engine: Engine,
    hatchet: Hatchet,
    workflows: dict[str, Any],
    mark_dir: Path,
) -> None:
    name = f"e2e-pause-{uuid.uuid4().hex[:6]}"
    with start_worker(engine, name=name, workflows=[PAUSABLE], mark_dir=mark_dir):

        async def worker_id() -> str | None:
            listed = await hatchet.workers.aio_list()
            ids = [w.metadata.id for w in listed.rows or [] if w.name == name]
            return ids[0] if ids else None

        wid = await eventually(worker_id, within=15, what=f"worker {name} in the REST list")

        # sanity: it serves work while not paused
        first = await asyncio.wait_for(workflows[PAUSABLE].aio_run(), timeout=30)
        assert first["worker_id"] == wid

        # PATCH /api/v1/workers/{id} {isPaused: true}. (Its `status` is not checked: it
        # reads INACTIVE whenever the last heartbeat is 5 s old, which a loaded box allows.)
        await hatchet.workers.aio_pause(wid)

        ref = await workflows[PAUSABLE].aio_run(wait_for_result=False)
        for _ in range(8):  # 4 s: several scheduler passes and a heartbeat or two
            await asyncio.sleep(0.5)
            details = await _details(hatchet, ref.workflow_run_id)
            assert details.status == V1TaskStatus.QUEUED, "a paused worker got new work"

        await hatchet.workers.aio_unpause(wid)
        result = await asyncio.wait_for(ref.aio_result(), timeout=30)
        assert result["worker_id"] == wid
        assert (await _details(hatchet, ref.workflow_run_id)).status == V1TaskStatus.COMPLETED
