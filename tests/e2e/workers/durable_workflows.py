"""Durable tasks of the durable-execution e2e test (``test_durable_e2e``).

Declared on both sides like ``e2e_workflows``: ``worker.py`` serves them, the test triggers
them. A replay runs a durable task's body again from the top, so each body leaves a line in
a per-run file of ``E2E_MARK_DIR`` for every stretch of code it runs (``<run>.<what>``,
the line names the worker and the invocation): the test counts how often each stretch ran,
and the files survive a ``kill -9`` of the worker.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from e2e_workflows import worker_name
from hatchet_sdk import DurableContext, Hatchet
from hatchet_sdk.runnables.eviction import EvictionPolicy
from hatchet_sdk.runnables.workflow import BaseWorkflow
from pydantic import BaseModel

SLEEP_KEPT = "e2e-durable-sleep-kept"
SLEEP_EVICTED = "e2e-durable-sleep-evicted"
EVENT_WAIT = "e2e-durable-event-wait"
LOOK_BACK = "e2e-durable-look-back"

# short enough that a waiting run leaves its durable slot within about two seconds (the
# SDK checks every second)
SHORT_TTL = EvictionPolicy(ttl=timedelta(seconds=1), allow_capacity_eviction=False)
# far beyond any wait of the test: the run keeps its slot while it sleeps
NEVER_EVICTED = EvictionPolicy(ttl=None, allow_capacity_eviction=False)
# generous: an evicted run's time counts for nothing here, but the test must not race it
TIMEOUT = timedelta(minutes=5)


class SleepInput(BaseModel):
    seconds: float


class EventInput(BaseModel):
    key: str


class LookBackInput(BaseModel):
    key: str
    scope: str
    look_back_seconds: float


class Stamp(BaseModel):
    at: float


def note(ctx: DurableContext, what: str) -> None:
    """Append one line to ``<run>.<what>``: the worker and the invocation that ran it."""
    directory = os.environ.get("E2E_MARK_DIR")
    if not directory:
        return
    path = Path(directory) / f"{ctx.workflow_run_id}.{what}"
    with path.open("a") as f:  # one short write: whole lines even when several append
        f.write(f"{worker_name()} {ctx.invocation_count}\n")


def define_durable(hatchet: Hatchet) -> dict[str, BaseWorkflow[Any]]:
    """Every durable e2e workflow, by name, declared on ``hatchet``."""

    async def sleep_body(input: SleepInput, ctx: DurableContext) -> dict[str, Any]:
        note(ctx, "invoked")

        async def first_start() -> Stamp:
            note(ctx, "memo")  # a memo runs its function once per run, never on replay
            return Stamp(at=time.time())

        started = await ctx._aio_memo(first_start, Stamp)  # the SDK's memo (1.37.5)
        await ctx.aio_sleep_for(timedelta(seconds=input.seconds))
        woke = time.time()
        note(ctx, "after-sleep")
        return {
            "started": started.at,
            "woke": woke,
            "worker_name": worker_name(),
            "invocation": ctx.invocation_count,
        }

    kept = hatchet.durable_task(
        name=SLEEP_KEPT,
        input_validator=SleepInput,
        execution_timeout=TIMEOUT,
        eviction_policy=NEVER_EVICTED,
    )(sleep_body)
    evicted = hatchet.durable_task(
        name=SLEEP_EVICTED,
        input_validator=SleepInput,
        execution_timeout=TIMEOUT,
        eviction_policy=SHORT_TTL,
    )(sleep_body)

    @hatchet.durable_task(
        name=EVENT_WAIT,
        input_validator=EventInput,
        execution_timeout=TIMEOUT,
        eviction_policy=SHORT_TTL,
    )
    async def event_wait(input: EventInput, ctx: DurableContext) -> dict[str, Any]:
        note(ctx, "waiting")
        payload = await ctx.aio_wait_for_event(input.key)
        return {"payload": payload, "invocation": ctx.invocation_count}

    @hatchet.durable_task(
        name=LOOK_BACK,
        input_validator=LookBackInput,
        execution_timeout=TIMEOUT,
        eviction_policy=NEVER_EVICTED,
    )
    async def look_back(input: LookBackInput, ctx: DurableContext) -> dict[str, Any]:
        note(ctx, "waiting")
        payload = await ctx.aio_wait_for_event(
            input.key,
            scope=input.scope,
            lookback_window=timedelta(seconds=input.look_back_seconds),
        )
        return {"payload": payload}

    return {SLEEP_KEPT: kept, SLEEP_EVICTED: evicted, EVENT_WAIT: event_wait, LOOK_BACK: look_back}
