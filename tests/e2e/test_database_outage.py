"""PostgreSQL stops for longer than the heartbeat timeout while runs are in flight.

During the outage RPCs answer UNAVAILABLE (which the SDKs retry) and REST 503, and the engine
logs calmly (well under one line per second). After the database returns no worker is
declared dead for heartbeats it could not store, so no task runs twice, and every run whose
trigger was acknowledged completes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from e2e_support import (
    Engine,
    bearer,
    marks,
    start_embedded_postgres,
    start_engine,
    start_worker,
    stop_embedded_postgres,
)
from e2e_workflows import CRASH, define
from hatchet_sdk.clients.rest.models.v1_task_status import V1TaskStatus
from hatchet_sdk.contracts import workflows_pb2_grpc as v0_grpc
from hatchet_sdk.contracts.v1.shared.trigger_pb2 import TriggerWorkflowRequest

HEARTBEAT_TIMEOUT = 5
OUTAGE_SECONDS = 15  # three heartbeat timeouts
RUNS_BEFORE, RUNS_AFTER = 20, 10

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def outage_engine() -> Iterator[Engine]:
    with start_engine({"HEWER_HEARTBEAT_TIMEOUT_SECONDS": str(HEARTBEAT_TIMEOUT)}) as engine:
        yield engine


def _trigger_code(engine: Engine) -> grpc.StatusCode:
    with grpc.insecure_channel(engine.host_port) as channel:
        try:
            v0_grpc.WorkflowServiceStub(channel).TriggerWorkflow(
                TriggerWorkflowRequest(name=CRASH, input="{}"),
                metadata=bearer(engine.token),
                timeout=10,
            )
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


async def test_database_outage_longer_than_the_heartbeat_timeout(
    outage_engine: Engine, mark_dir: Path
) -> None:
    engine = outage_engine
    hatchet = engine.client()
    crash = define(hatchet)[CRASH]  # each run marks its start, works 3 s, returns
    with start_worker(
        engine, name=f"e2e-outage-{uuid.uuid4().hex[:6]}", workflows=[CRASH], mark_dir=mark_dir
    ):
        refs = [await crash.aio_run(wait_for_result=False) for _ in range(RUNS_BEFORE)]
        await asyncio.sleep(1.0)  # some running, some queued

        log_start = engine.log_path.stat().st_size
        outage_start = time.monotonic()
        stop_embedded_postgres(engine.data_dir / "pg")
        await asyncio.sleep(2.0)
        codes = {_trigger_code(engine) for _ in range(3)}
        assert codes == {grpc.StatusCode.UNAVAILABLE}, codes
        response = engine.rest(
            "GET",
            f"/api/v1/stable/tenants/{engine.tenant_of()}/workflow-runs?since=2020-01-01T00:00:00Z",
        )
        assert response.status_code == 503, response.text
        await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - outage_start)))
        start_embedded_postgres(engine.data_dir / "pg")
        outage = time.monotonic() - outage_start

        refs += [await crash.aio_run(wait_for_result=False) for _ in range(RUNS_AFTER)]
        for ref in refs:
            await asyncio.wait_for(ref.aio_result(), timeout=120)
        window = time.monotonic() - outage_start
        engine.assert_alive()

    for ref in refs:
        details = await hatchet.runs.aio_get_details(ref.workflow_run_id)
        assert details.status == V1TaskStatus.COMPLETED, ref.workflow_run_id
        started = marks(mark_dir, ref.workflow_run_id, "started")
        assert list(started) == [1], f"{ref.workflow_run_id} ran {len(started)} times"
    log = engine.log_path.read_bytes()[log_start:].decode("utf-8", "replace")
    lines = log.splitlines()
    assert "Traceback" not in log, log[-6000:]
    assert "from dead worker" not in log, log[-6000:]  # timers.py: a task was re-queued
    assert len(lines) < window, f"{len(lines)} log lines in {window:.0f} s:\n" + log[-6000:]
    assert outage > OUTAGE_SECONDS - 1
