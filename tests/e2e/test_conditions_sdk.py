"""Conditions on a workflow's first task with a real SDK worker: the task has no parents,
so its ``wait_for`` and ``skip_if`` hold from the trigger on (the official suite puts every
condition on a child)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from condition_workflows import (
    ROOT_SKIP,
    ROOT_SLEEP,
    ROOT_SLEEP_SECONDS,
    SKIP_EVENT,
    define_conditions,
)
from e2e_support import Engine, WorkerProc, eventually, start_worker
from hatchet_sdk import Hatchet
from hatchet_sdk.clients.rest.models.v1_task_status import V1TaskStatus

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def conditioned(hatchet: Hatchet) -> dict[str, Any]:
    return define_conditions(hatchet)


@pytest.fixture(scope="module")
def condition_worker(engine: Engine, mark_dir: Path) -> Iterator[WorkerProc]:
    with start_worker(
        engine,
        name=f"e2e-conditions-{uuid.uuid4().hex[:6]}",
        workflows=[ROOT_SLEEP, ROOT_SKIP],
        mark_dir=mark_dir,
    ) as worker:
        yield worker


async def test_a_first_task_waits_for_its_sleep_from_the_trigger(
    hatchet: Hatchet, conditioned: dict[str, Any], condition_worker: WorkerProc
) -> None:
    triggered = time.time()
    ref = await conditioned[ROOT_SLEEP].aio_run(wait_for_result=False)
    details = await hatchet.runs.aio_get_details(ref.workflow_run_id)
    # waiting: the API shows it queued, and it is not running anywhere
    assert details.task_runs["first"].status == V1TaskStatus.QUEUED
    result = await asyncio.wait_for(ref.aio_result(), timeout=60)
    assert result["first"]["started"] - triggered >= ROOT_SLEEP_SECONDS
    assert result["second"]["after"] == result["first"]["started"]


async def test_a_first_task_skipped_by_an_event_lets_the_join_run(
    hatchet: Hatchet, conditioned: dict[str, Any], condition_worker: WorkerProc
) -> None:
    ref = await conditioned[ROOT_SKIP].aio_run(wait_for_result=False)
    run_id = ref.workflow_run_id

    async def plain_done() -> bool:
        details = await hatchet.runs.aio_get_details(run_id)
        tasks = details.task_runs
        return "plain" in tasks and tasks["plain"].status == V1TaskStatus.COMPLETED

    await eventually(plain_done, within=30, what="the plain root to finish")
    # the join waits for the gated root, which waits for its 60 s sleep or the event
    details = await hatchet.runs.aio_get_details(run_id)
    assert "join" not in details.task_runs
    assert details.task_runs["gated"].status == V1TaskStatus.QUEUED
    await hatchet.event.aio_push(SKIP_EVENT, {"skip": False})  # its expression does not hold
    await asyncio.sleep(1)
    assert "join" not in (await hatchet.runs.aio_get_details(run_id)).task_runs
    await hatchet.event.aio_push(SKIP_EVENT, {"skip": True})
    result = await asyncio.wait_for(ref.aio_result(), timeout=30)
    assert result["gated"] == {"skipped": True}
    assert result["join"] == {"gated_skipped": True, "plain": True}
