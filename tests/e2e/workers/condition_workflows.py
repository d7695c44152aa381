"""Workflows of the root-condition e2e tests (``test_conditions_sdk``).

Declared on both sides like ``e2e_workflows``: ``worker.py`` serves them, the test triggers
them. The first task of each has conditions of its own (it has no parents): a sleep it waits
for, or an event that skips it. Tasks report their wall-clock start (the test and the
workers share the machine).
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from hatchet_sdk import (
    Context,
    EmptyModel,
    Hatchet,
    SleepCondition,
    UserEventCondition,
)
from hatchet_sdk.runnables.workflow import BaseWorkflow

ROOT_SLEEP = "e2e-root-sleep"
ROOT_SKIP = "e2e-root-skip"
ROOT_SLEEP_SECONDS = 2
SKIP_EVENT = "e2e-root-skip:skip"


def started() -> dict[str, Any]:
    return {"started": time.time()}


def define_conditions(hatchet: Hatchet) -> dict[str, BaseWorkflow[Any]]:
    napper = hatchet.workflow(name=ROOT_SLEEP)

    @napper.task(wait_for=[SleepCondition(timedelta(seconds=ROOT_SLEEP_SECONDS))])
    def first(input: EmptyModel, ctx: Context) -> dict[str, Any]:
        return started()

    @napper.task(parents=[first])
    def second(input: EmptyModel, ctx: Context) -> dict[str, Any]:
        return {**started(), "after": ctx.task_output(first)["started"]}

    skippable = hatchet.workflow(name=ROOT_SKIP)

    # waits long enough for the test's event, which skips it
    @skippable.task(
        wait_for=[SleepCondition(timedelta(seconds=60))],
        skip_if=[UserEventCondition(event_key=SKIP_EVENT, expression="input.skip == true")],
    )
    def gated(input: EmptyModel, ctx: Context) -> dict[str, Any]:
        return started()

    @skippable.task()
    def plain(input: EmptyModel, ctx: Context) -> dict[str, Any]:
        return started()

    @skippable.task(parents=[gated, plain])
    def join(input: EmptyModel, ctx: Context) -> dict[str, Any]:
        return {
            "gated_skipped": ctx.was_skipped(gated),
            "plain": "started" in ctx.task_output(plain),
        }

    return {ROOT_SLEEP: napper, ROOT_SKIP: skippable}
