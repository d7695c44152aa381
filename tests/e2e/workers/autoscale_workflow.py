"""The workflow of the autoscaling tests, defined once for the test (to register and
trigger it) and the pool's workers (to serve it)."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from hatchet_sdk import Context, Hatchet
from pydantic import BaseModel


class Sleep(BaseModel):
    seconds: float
    n: int = 0


def define(hatchet: Hatchet, name: str) -> Any:
    workflow = hatchet.workflow(name=name, input_validator=Sleep)

    @workflow.task(execution_timeout=timedelta(seconds=60), retries=2)
    async def work(input: Sleep, ctx: Context) -> dict[str, Any]:
        directory = os.environ.get("E2E_MARK_DIR")
        pod = os.environ.get("HEWER_POD_NAME", "?")
        if directory:
            mark = Path(directory) / f"{ctx.workflow_run_id}.{ctx.attempt_number}.{pod}"
            mark.write_text(f"{time.time()} {input.seconds}\n")
        await asyncio.sleep(input.seconds)
        return {"n": input.n, "pod": pod}

    return workflow
