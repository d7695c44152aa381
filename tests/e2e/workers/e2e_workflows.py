"""Workflows of the end-to-end tests, defined once for both sides.

``define(hatchet)`` builds them on a client: the worker process (``worker.py``) serves them,
the test process uses the same objects only to trigger runs and read results, so names and
input types cannot drift apart.

The task bodies run only in a worker process. They report what they see to the test through
small files in ``E2E_MARK_DIR`` (named ``<run id>.<attempt>.<event>``, the content is the
worker's name, ``E2E_WORKER_NAME``): the test and the worker share the machine, so a file is
the simplest side channel that survives a ``kill -9`` of the worker.
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from hatchet_sdk import Context, EmptyModel, Hatchet
from hatchet_sdk.runnables.workflow import BaseWorkflow
from pydantic import BaseModel

CRASH = "e2e-crash"
ECHO = "e2e-echo"
DAG = "e2e-dag"
RETRY = "e2e-retry"
CANCELLABLE = "e2e-cancellable"
PAUSABLE = "e2e-pausable"
ISOLATED = "e2e-isolated"

CRASH_TASK_SECONDS = 3.0


class DagInput(BaseModel):
    n: int


def worker_name() -> str:
    return os.environ.get("E2E_WORKER_NAME", "?")


def mark(ctx: Context, event: str) -> None:
    """Leave ``<run id>.<attempt>.<event>`` in the mark directory, naming this worker."""
    directory = os.environ.get("E2E_MARK_DIR")
    if not directory:
        return
    path = Path(directory) / f"{ctx.workflow_run_id}.{ctx.attempt_number}.{event}"
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(worker_name())
    tmp.replace(path)  # atomic: the test never reads a half-written file


def define(hatchet: Hatchet) -> dict[str, BaseWorkflow[Any]]:
    """Every e2e workflow, by name, declared on ``hatchet``."""

    @hatchet.task(name=CRASH, retries=0, execution_timeout=timedelta(seconds=60))
    async def crash_task(input: EmptyModel, ctx: Context) -> dict[str, Any]:
        mark(ctx, "started")
        await asyncio.sleep(CRASH_TASK_SECONDS)
        return {
            "worker_name": worker_name(),
            "worker_id": ctx.worker_id,
            "attempt": ctx.attempt_number,
        }

    @hatchet.task(name=ECHO, retries=0)
    async def echo(input: EmptyModel, ctx: Context) -> dict[str, Any]:
        return {"echo": input.model_dump(), "worker_name": worker_name()}

    dag = hatchet.workflow(name=DAG, input_validator=DagInput)

    @dag.task()
    async def first(input: DagInput, ctx: Context) -> dict[str, int]:
        return {"value": input.n}

    @dag.task()
    async def second(input: DagInput, ctx: Context) -> dict[str, int]:
        return {"value": input.n * 10}

    @dag.task(parents=[first, second])
    async def total(input: DagInput, ctx: Context) -> dict[str, Any]:
        a = ctx.task_output(first)
        b = ctx.task_output(second)
        return {"sum": a["value"] + b["value"], "seen": {"first": a, "second": b}}

    @hatchet.task(name=RETRY, retries=2)
    async def flaky(input: EmptyModel, ctx: Context) -> dict[str, int]:
        mark(ctx, "attempt")
        if ctx.attempt_number < 3:
            raise RuntimeError(f"planned failure on attempt {ctx.attempt_number}")
        return {"attempt": ctx.attempt_number, "retry_count": ctx.retry_count}

    @hatchet.task(name=CANCELLABLE, retries=0, execution_timeout=timedelta(seconds=120))
    async def cancellable(input: EmptyModel, ctx: Context) -> dict[str, bool]:
        mark(ctx, "started")
        try:
            for _ in range(120):
                await asyncio.sleep(0.25)
                if ctx.is_cancelled:
                    mark(ctx, "flag")
        except asyncio.CancelledError:
            mark(ctx, "cancelled")
            raise
        return {"finished": True}

    @hatchet.task(name=PAUSABLE, retries=0)
    async def pausable(input: EmptyModel, ctx: Context) -> dict[str, str]:
        return {"worker_name": worker_name(), "worker_id": ctx.worker_id}

    @hatchet.task(name=ISOLATED, retries=0)
    async def isolated(input: EmptyModel, ctx: Context) -> dict[str, str]:
        return {"worker_name": worker_name(), "worker_id": ctx.worker_id}

    return {
        CRASH: crash_task,
        ECHO: echo,
        DAG: dag,
        RETRY: flaky,
        CANCELLABLE: cancellable,
        PAUSABLE: pausable,
        ISOLATED: isolated,
    }
