"""Workflows of the placement and priority e2e tests (``test_placement_sdk``).

Declared on both sides like ``e2e_workflows``: ``worker.py`` serves them, the test triggers
them. Each task reports the worker it ran on and when it started (wall clock: the test and
the workers share the machine).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from e2e_workflows import mark, worker_name
from hatchet_sdk import (
    Context,
    DesiredWorkerLabel,
    EmptyModel,
    Hatchet,
    StickyStrategy,
    WorkerLabelComparator,
)
from hatchet_sdk.runnables.workflow import BaseWorkflow
from pydantic import BaseModel

STICKY_HARD = "e2e-sticky-hard"
AFFINITY = "e2e-affinity"
RELEASE = "e2e-release"
PRIORITY = "e2e-priority"

GATE_SECONDS = 30.0
RELEASE_HOLD_SECONDS = 4.0


class Hold(BaseModel):
    seconds: float = 0.0


class Gate(BaseModel):
    # wait for the test's "<run id>.go" file in the mark directory before finishing
    gated: bool = False


async def wait_for_go(ctx: Context, *, within: float) -> None:
    directory = os.environ.get("E2E_MARK_DIR")
    go = Path(directory or ".") / f"{ctx.workflow_run_id}.go"
    for _ in range(int(within * 10)):  # polls a file: the test is another process
        if go.exists():
            return
        await asyncio.sleep(0.1)


def where(ctx: Context) -> dict[str, Any]:
    return {"worker_name": worker_name(), "worker_id": ctx.worker_id, "started": time.time()}


def define_placement(hatchet: Hatchet) -> dict[str, BaseWorkflow[Any]]:
    sticky = hatchet.workflow(name=STICKY_HARD, sticky=StickyStrategy.HARD, input_validator=Gate)

    @sticky.task()
    async def first(input: Gate, ctx: Context) -> dict[str, Any]:
        mark(ctx, "first")
        if input.gated:
            await wait_for_go(ctx, within=GATE_SECONDS)
        return where(ctx)

    @sticky.task(parents=[first])
    async def second(input: Gate, ctx: Context) -> dict[str, Any]:
        return where(ctx)

    @sticky.task(parents=[second])
    async def third(input: Gate, ctx: Context) -> dict[str, Any]:
        return where(ctx)

    @hatchet.task(
        name=AFFINITY,
        retries=0,
        desired_worker_labels=[
            DesiredWorkerLabel(key="model", value="fancy", weight=10),
            DesiredWorkerLabel(
                key="memory",
                value=256,
                comparator=WorkerLabelComparator.GREATER_THAN,
                weight=100,
            ),
        ],
    )
    async def affinity(input: EmptyModel, ctx: Context) -> dict[str, Any]:
        return where(ctx)

    @hatchet.task(name=RELEASE, retries=0, input_validator=Hold)
    async def release(input: Hold, ctx: Context) -> dict[str, Any]:
        seen = where(ctx)
        if input.seconds:
            await ctx.aio_release_slot()
            await asyncio.sleep(input.seconds)
        return {**seen, "finished": time.time()}

    @hatchet.task(name=PRIORITY, retries=0, input_validator=Hold)
    async def priority(input: Hold, ctx: Context) -> dict[str, Any]:
        seen = where(ctx)
        await asyncio.sleep(input.seconds)
        return {**seen, "priority": ctx.priority}

    return {STICKY_HARD: sticky, AFFINITY: affinity, RELEASE: release, PRIORITY: priority}
