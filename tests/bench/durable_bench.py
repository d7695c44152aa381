"""Durable sleep benchmark (a script, not a test).

    .venv/bin/python tests/bench/durable_bench.py [--tasks 1000] [--sleep 1.0]
        [--durable-slots 1000] [--ttl SECONDS] [--profile DIR]

Starts a fresh ``hewer dev`` (``tests/e2e/e2e_support.start_engine``) and one official-SDK
worker process (this script with ``--worker``) serving ``bench-durable-sleep``: a durable
task that stamps the time, calls ``ctx.aio_sleep_for(--sleep)``, stamps the time again and
returns both stamps. It triggers ``--tasks`` runs in bulk and waits until all have
finished, then prints:

* total: first trigger sent -> last run finished (the engine's ``finished_at``);
* start delay: trigger -> the task body's first stamp (queueing and dispatch);
* wake-up lateness: second stamp - (first stamp + sleep), p50 / p95 / max. The deadline
  the engine holds is set when the sleep is registered, a round trip after the first
  stamp, so this lateness is slightly pessimistic;
* the engine's peak RSS (VmHWM, whole run), and CPU seconds of the engine, its PostgreSQL
  and the worker during the phase.

With ``--ttl`` every run is evicted while it sleeps (the SDK's eviction TTL) and restored
by the engine when its sleep ends, so the wake-up includes a re-queue and a replay.
See tests/bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
E2E = HERE.parent / "e2e"
for p in (HERE, E2E):
    sys.path.insert(0, str(p))

import asyncpg  # noqa: E402
import requests  # noqa: E402
from e2e_support import Engine, _clean_environ, free_port, start_engine  # noqa: E402
from hatchet_sdk import DurableContext, Hatchet  # noqa: E402
from hatchet_sdk.clients.rest.models.v1_task_status import V1TaskStatus  # noqa: E402
from hatchet_sdk.runnables.eviction import (  # noqa: E402
    DEFAULT_DURABLE_TASK_EVICTION_POLICY,
    EvictionPolicy,
)
from hatchet_sdk.runnables.workflow import BaseWorkflow  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from bench import MemoryMonitor, find_py_spy, summarize_profile, tree_cpu  # noqa: E402
from hewer.engine.db.embedded import EmbeddedPostgres  # noqa: E402

TASK = "bench-durable-sleep"
CHUNK = 500  # runs per bulk trigger
FINAL = {V1TaskStatus.COMPLETED, V1TaskStatus.FAILED, V1TaskStatus.CANCELLED}


class SleepInput(BaseModel):
    seconds: float
    remember: bool  # take the start time through a memo (needed when runs are evicted)


def define(hatchet: Hatchet, *, ttl: float | None) -> BaseWorkflow[Any]:
    policy = (
        DEFAULT_DURABLE_TASK_EVICTION_POLICY
        if ttl is None
        else EvictionPolicy(ttl=timedelta(seconds=ttl), allow_capacity_eviction=False)
    )

    @hatchet.durable_task(
        name=TASK,
        input_validator=SleepInput,
        execution_timeout=timedelta(minutes=10),
        eviction_policy=policy,
    )
    async def sleeper(input: SleepInput, ctx: DurableContext) -> dict[str, Any]:
        asked = time.time()
        if input.remember:
            # a restore replays the task: the memo keeps the first invocation's stamp (at
            # the cost of two more durable requests per run)
            async def stamp() -> dict[str, float]:
                return {"at": time.time()}

            asked = (await ctx._aio_memo(stamp, dict))["at"]
        await ctx.aio_sleep_for(timedelta(seconds=input.seconds))
        return {"asked": asked, "woke": time.time(), "invocation": ctx.invocation_count}

    return sleeper


def worker_main(args: argparse.Namespace) -> None:
    hatchet = Hatchet()
    sleeper = define(hatchet, ttl=args.ttl)
    worker = hatchet.worker(
        "bench-durable-worker", slots=1, durable_slots=args.durable_slots, workflows=[sleeper]
    )
    worker.start()


# -- the orchestrating process ----------------------------------------------------------------


def start_worker(
    engine: Engine, args: argparse.Namespace, log_path: Path
) -> subprocess.Popen[bytes]:
    health_port = free_port()
    env = _clean_environ()
    env.update(engine.client_env)
    env.update(
        {
            "HATCHET_CLIENT_WORKER_HEALTHCHECK_ENABLED": "True",
            "HATCHET_CLIENT_WORKER_HEALTHCHECK_PORT": str(health_port),
            "PYTHONUNBUFFERED": "1",
        }
    )
    command = [sys.executable, __file__, "--worker", "--durable-slots", str(args.durable_slots)]
    if args.ttl is not None:
        command += ["--ttl", str(args.ttl)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command,
            env=env,
            cwd=log_path.parent,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited:\n{log_path.read_text()[-3000:]}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"http://localhost:{health_port}/health", timeout=2).ok:
                return proc
        time.sleep(0.25)
    raise RuntimeError("the worker never became healthy")


async def breakdown(
    engine: Engine, outputs: dict[str, dict[str, Any]], sleep: float
) -> dict[str, list[float]]:
    """Where the lateness comes from, per run, p50/p95/max: the sleep's log entry says when
    the engine registered it and when it fired (both its transactions' start, ``now()``)."""
    conn = await asyncpg.connect(EmbeddedPostgres(data_dir=engine.data_dir / "pg").dsn)
    try:
        entries = await conn.fetch(
            "SELECT t.workflow_run_id::text AS run, e.created_at, e.satisfied_at "
            "FROM durable_entries e JOIN tasks t ON t.id = e.task_id "
            "WHERE e.kind = 'WAIT_FOR' AND e.satisfied_at IS NOT NULL"
        )
    finally:
        await conn.close()
    parts: dict[str, list[float]] = {
        "asked -> registered": [],
        "deadline -> fired": [],
        "fired -> woke": [],
    }
    for e in entries:
        o = outputs.get(e["run"])
        if o is None:
            continue
        registered, fired = e["created_at"].timestamp(), e["satisfied_at"].timestamp()
        parts["asked -> registered"].append(registered - o["asked"])
        parts["deadline -> fired"].append(fired - (registered + sleep))
        parts["fired -> woke"].append(o["woke"] - fired)
    return {k: v for k, v in parts.items() if v}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


async def measure(engine: Engine, args: argparse.Namespace, worker_pid: int) -> int:
    hatchet = engine.client()
    sleeper = define(hatchet, ttl=args.ttl)
    tag = uuid.uuid4().hex[:8]
    mon = MemoryMonitor(engine.proc.pid, engine.data_dir / "pg" / "postmaster.pid")
    mon.start()
    cpu0, worker0 = mon.cpu(), tree_cpu(worker_pid)
    items = [
        sleeper.create_bulk_run_item(
            input=SleepInput(seconds=args.sleep, remember=args.ttl is not None),
            additional_metadata={"bench": tag},
        )
        for _ in range(args.tasks)
    ]
    triggered = time.time()
    for i in range(0, len(items), CHUNK):
        await sleeper.aio_run_many(items[i : i + CHUNK], wait_for_result=False)
    trigger_seconds = time.time() - triggered

    # poll without payloads (cheap for the engine), then read the outputs once
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        page = await hatchet.runs.aio_list(
            additional_metadata={"bench": tag},
            only_tasks=True,
            statuses=sorted(FINAL),
            limit=args.tasks * 2,
            include_payloads=False,
        )
        if len(page.rows or []) == args.tasks:
            break
        await asyncio.sleep(1.0)
    cpu1, worker1 = mon.cpu(), tree_cpu(worker_pid)
    page = await hatchet.runs.aio_list(
        additional_metadata={"bench": tag}, only_tasks=True, limit=args.tasks * 2
    )
    rows = page.rows or []
    mon.stop()

    done = [r for r in rows if r.status == V1TaskStatus.COMPLETED]
    outputs_by_run = {r.workflow_run_external_id: r.output for r in done}
    outputs = list(outputs_by_run.values())
    finished = max((r.finished_at.timestamp() for r in done if r.finished_at), default=0.0)
    late = [o["woke"] - (o["asked"] + args.sleep) for o in outputs]
    start_delay = [o["asked"] - triggered for o in outputs]
    replays = sum(1 for o in outputs if o.get("invocation", 1) > 1)

    print(
        f"durable sleep: {args.tasks} runs of {args.sleep:g} s, official hatchet-sdk worker "
        f"({args.durable_slots} durable slots"
        + (f", eviction TTL {args.ttl:g} s" if args.ttl is not None else "")
        + ")"
    )
    print(
        f"  completed                  {len(done)} / {args.tasks}"
        f"  (replayed after a restore: {replays})"
    )
    print(
        f"  total (trigger -> last)    {finished - triggered:7.2f} s"
        f"  (triggers sent in {trigger_seconds:.2f} s)"
    )
    if late:
        print(
            f"  start delay p50/p95/max    {pct(start_delay, 50):7.3f} / "
            f"{pct(start_delay, 95):.3f} / {max(start_delay):.3f} s"
        )
        print(
            f"  wake lateness p50/p95/max  {pct(late, 50):7.3f} / {pct(late, 95):.3f} / "
            f"{max(late):.3f} s  (min {min(late):.3f}, mean {statistics.fmean(late):.3f})"
        )
    if late:
        for what, values in (await breakdown(engine, outputs_by_run, args.sleep)).items():
            print(
                f"  {what:<26} {pct(values, 50):7.3f} / {pct(values, 95):.3f} / {max(values):.3f} s"
            )
    print(f"  engine peak RSS (VmHWM)    {mon.hwm() / 2**20:7.1f} MB")
    print(
        f"  CPU s engine / postgres / worker   {cpu1[0] - cpu0[0]:.1f} / "
        f"{cpu1[1] - cpu0[1]:.1f} / {worker1 - worker0:.1f}"
    )
    return 0 if len(done) == args.tasks else 1


@contextlib.contextmanager
def profiling(engine: Engine, directory: str | None) -> Iterator[None]:
    """py-spy the engine (50 Hz, raw stacks) while the body runs; print a summary after."""
    py_spy = find_py_spy() if directory else None
    if directory is None or py_spy is None:
        if directory is not None:
            print("--profile: py-spy not found, not profiling", file=sys.stderr)
        yield
        return
    raw = Path(directory) / "engine-durable.txt"
    raw.parent.mkdir(parents=True, exist_ok=True)
    profiler = subprocess.Popen(
        [
            *(py_spy, "record", "--pid", str(engine.proc.pid), "--rate", "50"),
            *("--format", "raw", "--output", str(raw), "--nonblocking"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        profiler.wait(timeout=60)
    summarize_profile(raw)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--sleep", type=float, default=1.0, help="seconds each run sleeps")
    parser.add_argument("--durable-slots", type=int, default=1000)
    parser.add_argument("--ttl", type=float, default=None, help="evict sleeping runs after")
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--profile", default=None, help="py-spy the engine into DIR")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args)
        return 0
    with start_engine({"HEWER_LOG_LEVEL": "WARNING"}) as engine:
        log_path = engine.data_dir / "worker.log"
        worker = start_worker(engine, args, log_path)
        try:
            with profiling(engine, args.profile):
                return asyncio.run(measure(engine, args, worker.pid))
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(timeout=15)


if __name__ == "__main__":
    sys.exit(main())
