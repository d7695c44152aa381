"""``hewer dev --processes 2``: two engine processes behind one pair of ports.

One test walks the whole life of such an engine, in order: both processes take
connections, SDK tasks complete, every scrape of ``/metrics`` (each may land on either
process) reports the totals of both, a child killed with SIGKILL is replaced and tasks
still complete, and SIGTERM to the parent stops everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest
import requests
from e2e_support import Engine, _hewer_command, bearer, eventually, start_engine, start_worker
from e2e_workflows import ECHO, define
from hatchet_sdk.contracts import dispatcher_pb2 as dpb
from hatchet_sdk.contracts import dispatcher_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from replica_support import database_url

from hewer.engine.errors import EngineStartError
from hewer.engine.processes import ensure_port_unused

pytestmark = pytest.mark.timeout(300)

# fresh TCP connections to try: all of them land on one of two processes with 2 * 2**-16
CONNECTIONS = 16
WITHIN = 60.0
ASSIGNED = "hatchet_assigned_tasks_total"


def engine_processes(engine: Engine) -> set[int]:
    """The pids of the parent's children (the engine processes)."""
    pid = engine.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {int(c) for c in children}


def running(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def served_engine_ids(engine: Engine) -> list[str]:
    """The engine ids the parent logged as serving, oldest first."""
    return re.findall(r"serves as (engine-[0-9a-f-]+)", engine.log_path.read_text())


@contextlib.asynccontextmanager
async def listening_workers(engine: Engine, n: int) -> AsyncIterator[list[str]]:
    """``n`` raw workers, each with its own channel (its own TCP connection), holding an
    open ListenV2 stream; yields their ids."""
    md = bearer(engine.token)
    channels = [
        # a local subchannel pool: channels to one address would share a connection
        grpc.aio.insecure_channel(engine.host_port, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(n)
    ]
    calls = []
    ids: list[str] = []
    try:
        for channel in channels:
            stub = dispatcher_pb2_grpc.DispatcherStub(channel)  # type: ignore[attr-defined]
            reg = await stub.Register(
                dpb.WorkerRegisterRequest(
                    worker_name=f"e2e-procs-{uuid.uuid4().hex[:6]}", actions=["procs:none"]
                ),
                metadata=md,
                timeout=WITHIN,
            )
            ids.append(str(reg.worker_id))
            call = stub.ListenV2(dpb.WorkerListenRequest(worker_id=reg.worker_id), metadata=md)
            calls.append(call)
        yield ids
    finally:
        for call in calls:
            call.cancel()
        for channel in channels:
            await channel.close()


async def stream_holders(engine: Engine, worker_ids: list[str]) -> list[str]:
    """The engine id holding each worker's stream, once every worker has one."""
    conn = await asyncpg.connect(database_url(engine))
    try:

        async def holders() -> list[str] | None:
            rows = await conn.fetch(
                "SELECT engine_id FROM workers WHERE id = ANY($1::uuid[]) AND is_active",
                worker_ids,
            )
            found = [r["engine_id"] for r in rows if r["engine_id"]]
            return found if len(found) == len(worker_ids) else None

        return await eventually(holders, within=WITHIN, what="every worker's stream")
    finally:
        await conn.close()


def scrape_totals(engine: Engine, name: str, scrapes: int = 12) -> list[float]:
    """``name``'s value in each of ``scrapes`` scrapes, each on a fresh connection."""
    values = []
    for _ in range(scrapes):
        text = requests.get(f"{engine.server_url}/metrics", timeout=30).text
        samples = [
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == name and not s.labels
        ]
        values.append(samples[0] if samples else 0.0)
    return values


async def run_echoes(engine: Engine, n: int) -> None:
    echo = define(engine.client())[ECHO]
    refs = [await echo.aio_run(wait_for_result=False) for _ in range(n)]
    results = await asyncio.wait_for(
        asyncio.gather(*(ref.aio_result() for ref in refs)), timeout=WITHIN
    )
    assert all("echo" in r for r in results)


async def test_two_processes_share_the_ports_survive_a_kill_and_stop(mark_dir: Path) -> None:
    with start_engine(extra_args=["--processes", "2"]) as engine:
        first = engine_processes(engine)
        assert len(first) == 2
        ids = served_engine_ids(engine)
        assert len(set(ids)) == 2

        # the kernel spreads fresh connections over both processes
        async with listening_workers(engine, CONNECTIONS) as workers:
            holders = await stream_holders(engine, workers)
        assert set(holders) == set(ids)

        # anything else on these ports fails at once, even a second engine of processes
        with pytest.raises(EngineStartError, match="another program serves it"):
            ensure_port_unused(host="0.0.0.0", port=engine.grpc_port, what="gRPC")
        second = subprocess.run(  # noqa: ASYNC221 - a few seconds, nothing else to await
            [*_hewer_command(), "serve", "--processes", "2", "--grpc-port", str(engine.grpc_port)],
            env={**engine.engine_env, "HEWER_DATABASE_URL": database_url(engine)},
            capture_output=True,
            timeout=WITHIN,
            check=False,
        )
        assert second.returncode == 2
        assert b"another program serves it" in second.stderr

        with start_worker(engine, name="e2e-procs", workflows=[ECHO], mark_dir=mark_dir):
            await run_echoes(engine, 20)
            # Only the process holding the worker's stream assigns its tasks, yet every
            # scrape, whichever process answers it, counts all of them.
            assert scrape_totals(engine, ASSIGNED) == [20.0] * 12

            victim = sorted(first)[0]
            os.kill(victim, signal.SIGKILL)

            async def replaced() -> set[int] | None:
                now = engine_processes(engine)
                ready = len(served_engine_ids(engine)) == 3
                return now if ready and len(now) == 2 and victim not in now else None

            after = await eventually(replaced, within=WITHIN, what="the killed child's successor")
            assert "stopped unexpectedly (killed by SIGKILL)" in engine.log_path.read_text()
            await run_echoes(engine, 10)
            # the dead process's counts stay in the totals: counters never go backwards
            totals = set(scrape_totals(engine, ASSIGNED))
            assert len(totals) == 1
            assert totals.pop() >= 30  # a task the kill cut off may have been assigned twice

        engine.proc.send_signal(signal.SIGTERM)  # the parent only: it stops its children
        assert engine.proc.wait(timeout=WITHIN) == 0, engine.log()
        for pid in after:
            assert not running(pid), f"engine process {pid} survived"
