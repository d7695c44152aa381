"""Workflows of the dashboard's browser tests (``test_dashboard_browser``).

``e2e-dash-order`` is a two-task DAG that logs as it goes; its second task fails with
"card declined" when the input asks for it (no retries), so a failed run has an error and
logs to show. ``e2e-dash-slow`` sleeps for ``seconds`` and stops when cancelled: it gives
the queue and the workers something to show, and a running run to cancel.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from hatchet_sdk import Context, Hatchet
from hatchet_sdk.runnables.workflow import BaseWorkflow
from pydantic import BaseModel

ORDER = "e2e-dash-order"
SLOW = "e2e-dash-slow"


class OrderInput(BaseModel):
    item: str = "book"
    fail: bool = False
    note: str = ""


class SlowInput(BaseModel):
    seconds: float = 1.0


def define_dashboard(hatchet: Hatchet) -> dict[str, BaseWorkflow[Any]]:
    order = hatchet.workflow(name=ORDER, input_validator=OrderInput)

    @order.task(retries=0)
    async def prepare(input: OrderInput, ctx: Context) -> dict[str, str]:
        ctx.log(f"preparing order for {input.item}")
        return {"item": input.item}

    @order.task(parents=[prepare], retries=0)
    async def charge(input: OrderInput, ctx: Context) -> dict[str, str]:
        ctx.log("charging the card")
        if input.fail:
            raise RuntimeError("card declined")
        return {"charged": input.item}

    @hatchet.task(name=SLOW, retries=0, execution_timeout=timedelta(seconds=120))
    async def slow(input: SlowInput, ctx: Context) -> dict[str, float]:
        waited = 0.0
        while waited < input.seconds and not ctx.is_cancelled:
            await asyncio.sleep(0.1)
            waited += 0.1
        return {"slept": round(waited, 1)}

    return {ORDER: order, SLOW: slow}
