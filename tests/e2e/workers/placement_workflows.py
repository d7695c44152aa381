"""Workflows of the placement and priority e2e tests (``test_placement_sdk``).

Declared on both sides like ``e2e_workflows``: ``worker.py`` serves them, the test triggers
them. Each task reports the worker it ran on and when it started (wall clock: the test and
the workers share the machine).
"""

from __future__ import annotations

import asyncio
import time
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

FIRST_TASK_SECONDS = 2.0
RELEASE_HOLD_SECONDS = 4.0


class Hold(BaseModel):
    seconds: float = 0.0


def where(ctx: Context) -> dict[str, Any]:
    return {"worker_name": worker_name(), "worker_id": ctx.worker_id, "started": time.time()}


def define_placement(hatchet: Hatchet) -> dict[str, BaseWorkflow[Any]]:
    sticky = hatchet.workflow(name=STICKY_HARD, sticky=StickyStrategy.HARD)

    @sticky.task()
    async def first(input: EmptyModel, ctx: Context) -> dict[str, Any]:
        mark(ctx, "first")
        await asyncio.sleep(FIRST_TASK_SECONDS)
        return where(ctx)

    @sticky.task(parents=[first])
    async def second(input: EmptyModel, ctx: Context) -> dict[str, Any]:
        return where(ctx)

    @sticky.task(parents=[second])
    async def third(input: EmptyModel, ctx: Context) -> dict[str, Any]:
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
