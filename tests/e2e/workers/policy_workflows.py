"""Workflows of the scheduling-policy e2e tests (``test_policies_sdk``).

Declared on both sides like ``e2e_workflows``: ``worker.py`` serves them, the test triggers
them. Each task reports the worker it ran on and its own wall-clock start and finish (the
test and the workers share the machine, so the times compare with the engine's).
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from e2e_workflows import worker_name
from hatchet_sdk import (
    ConcurrencyExpression,
    ConcurrencyLimitStrategy,
    Context,
    EmptyModel,
    Hatchet,
    RateLimit,
)
from hatchet_sdk.runnables.workflow import BaseWorkflow
from pydantic import BaseModel

FAIR = "e2e-fair"
RATED = "e2e-rated"
EXCLUSIVE = "e2e-exclusive"

# a static limit: the test puts it (hatchet.rate_limits.put) before it triggers anything
RATE_KEY = "e2e-five-per-second"
RATE_PER_SECOND = 5


class Keyed(BaseModel):
    key: str
    seconds: float = 0.0


def one_per_key() -> ConcurrencyExpression:
    return ConcurrencyExpression(
        expression="input.key",
        max_runs=1,
        limit_strategy=ConcurrencyLimitStrategy.GROUP_ROUND_ROBIN,
    )


async def held(input: Keyed, ctx: Context) -> dict[str, Any]:
    started = time.time()
    await asyncio.sleep(input.seconds)
    return {
        "key": input.key,
        "worker_name": worker_name(),
        "worker_id": ctx.worker_id,
        "started": started,
        "finished": time.time(),
    }


def define_policies(hatchet: Hatchet) -> dict[str, BaseWorkflow[Any]]:
    # task-level concurrency: the gate is the task's, the workflow has none
    fair = hatchet.workflow(name=FAIR, input_validator=Keyed)

    @fair.task(concurrency=[one_per_key()], execution_timeout=timedelta(seconds=60), retries=0)
    async def turn(input: Keyed, ctx: Context) -> dict[str, Any]:
        return await held(input, ctx)

    @hatchet.task(
        name=RATED,
        retries=0,
        rate_limits=[RateLimit(static_key=RATE_KEY, units=1)],
    )
    async def rated(input: EmptyModel, ctx: Context) -> dict[str, Any]:
        return {"worker_name": worker_name(), "started": time.time()}

    # workflow-level concurrency: the gate is the run's
    exclusive = hatchet.workflow(name=EXCLUSIVE, input_validator=Keyed, concurrency=one_per_key())

    @exclusive.task(execution_timeout=timedelta(seconds=60), retries=0)
    async def hold(input: Keyed, ctx: Context) -> dict[str, Any]:
        return await held(input, ctx)

    return {FAIR: fair, RATED: rated, EXCLUSIVE: exclusive}
