"""``kill -9`` of a worker in the middle of a task: the engine re-queues it to the survivor.

This test runs its own engine with a short heartbeat timeout (the default is 30 s): the
task of a worker whose heartbeats stopped is re-queued once the timeout passes. The SDK
beats every 4 s, so 8 s leaves a live worker two chances.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import Engine, eventually, marks, start_engine, start_worker
from e2e_workflows import CRASH, define
from hatchet_sdk.clients.rest.models.v1_task_status import V1TaskStatus

HEARTBEAT_TIMEOUT = 8

pytestmark = pytest.mark.timeout(150)


@pytest.fixture(scope="module")
def crash_engine() -> Iterator[Engine]:
    with start_engine({"HEWER_HEARTBEAT_TIMEOUT_SECONDS": str(HEARTBEAT_TIMEOUT)}) as engine:
        yield engine


async def test_task_of_killed_worker_completes_on_the_other(
    crash_engine: Engine, mark_dir: Path
) -> None:
    hatchet = crash_engine.client()
    crash = define(hatchet)[CRASH]
    names = [f"e2e-crash-{i}-{uuid.uuid4().hex[:6]}" for i in (1, 2)]

    with contextlib.ExitStack() as stack:
        workers = {
            name: stack.enter_context(
                start_worker(
                    crash_engine, name=name, workflows=[CRASH], mark_dir=mark_dir, wait=False
                )
            )
            for name in names
        }
        for worker in workers.values():
            worker.wait_healthy()
        ref = await crash.aio_run(wait_for_result=False)
        run_id = ref.workflow_run_id

        async def first_attempt() -> str | None:
            return marks(mark_dir, run_id, "started").get(1)

        victim_name = await eventually(first_attempt, within=30, what="the task to start")
        details = await hatchet.runs.aio_get_details(run_id)
        assert details.status == V1TaskStatus.RUNNING
        (survivor_name,) = set(names) - {victim_name}

        workers[victim_name].kill_hard()  # SIGKILL of the worker and its listener process

        # The task is re-queued only after the heartbeat timeout, then runs ~3 s again.
        result = await asyncio.wait_for(ref.aio_result(), timeout=HEARTBEAT_TIMEOUT + 40)

        assert result["worker_name"] == survivor_name
        started = marks(mark_dir, run_id, "started")
        assert started[1] == victim_name
        assert started[result["attempt"]] == survivor_name
        # a lost worker is an internal failure: a new attempt, no app retry used (retries=0)
        assert result["attempt"] >= 2

        details = await hatchet.runs.aio_get_details(run_id)
        assert details.status == V1TaskStatus.COMPLETED
        assert details.task_runs[CRASH].output == result

        survivor_id = result["worker_id"]
        listed = await hatchet.workers.aio_list()
        by_name = {w.name: w for w in listed.rows or []}
        assert by_name[survivor_name].metadata.id == survivor_id
        assert by_name[victim_name].metadata.id != survivor_id
        crash_engine.assert_alive()
