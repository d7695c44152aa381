"""Tenant isolation over gRPC and REST, and rejection of bad tokens on REST.

Tenant A is the engine's default tenant (``engine.token``); tenant B gets its token from
``hewer token create --tenant e2e-other``, as an operator would. A's run of ``e2e-isolated``
stays QUEUED throughout (no worker of A serves it) while B runs a worker for a workflow of
the same name: B can neither see, cancel nor steal it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from e2e_support import SIGNING_SECRET, Engine, WorkerProc, bearer, start_worker
from e2e_workflows import ISOLATED, define
from hatchet_sdk import Hatchet
from hatchet_sdk.clients.rest.models.v1_task_status import V1TaskStatus
from hatchet_sdk.contracts.v1 import workflows_pb2 as v1
from hatchet_sdk.contracts.v1 import workflows_pb2_grpc as v1_grpc
from hatchet_sdk.contracts.v1.shared.trigger_pb2 import TriggerWorkflowRequest
from hatchet_sdk.contracts.workflows_pb2_grpc import WorkflowServiceStub

from hewer.engine.core.tokens import mint_token

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def token_b(engine: Engine) -> str:
    return engine.create_token("e2e-other")


@pytest.fixture(scope="module")
def channel(engine: Engine) -> Iterator[grpc.Channel]:
    ch = engine.grpc_channel()
    yield ch
    ch.close()


@pytest.fixture(scope="module")
def worker_b(engine: Engine, token_b: str, mark_dir: Path) -> Iterator[WorkerProc]:
    """Tenant B's worker for ``e2e-isolated`` (registers B's workflow of that name)."""
    with start_worker(
        engine, name="e2e-tenant-b", workflows=[ISOLATED], mark_dir=mark_dir, token=token_b
    ) as worker:
        yield worker


@pytest_asyncio.fixture(scope="module")
async def run_a(engine: Engine, hatchet: Hatchet, channel: grpc.Channel) -> dict[str, str]:
    """A run of tenant A's ``e2e-isolated``, registered by A but served by no worker of A."""
    isolated = define(hatchet)[ISOLATED]
    v1_grpc.AdminServiceStub(channel).PutWorkflow(
        isolated.to_proto(), metadata=bearer(engine.token), timeout=20
    )
    ref = await isolated.aio_run(wait_for_result=False)
    details = await hatchet.runs.aio_get_details(ref.workflow_run_id)
    assert details.status == V1TaskStatus.QUEUED
    return {"run": ref.workflow_run_id, "task": details.task_runs[ISOLATED].external_id}


def _get_run_details(channel: grpc.Channel, token: str, run_id: str) -> Any:
    return v1_grpc.AdminServiceStub(channel).GetRunDetails(
        v1.GetRunDetailsRequest(external_id=run_id), metadata=bearer(token), timeout=20
    )


async def test_tenant_b_cannot_see_or_touch_a_run_of_a(
    engine: Engine,
    hatchet: Hatchet,
    channel: grpc.Channel,
    token_b: str,
    worker_b: WorkerProc,
    run_a: dict[str, str],
) -> None:
    tenant_a, tenant_b = engine.tenant_of(), engine.tenant_of(token_b)
    assert tenant_a != tenant_b
    run, task = run_a["run"], run_a["task"]

    # gRPC: the run does not exist for B
    with pytest.raises(grpc.RpcError) as info:
        _get_run_details(channel, token_b, run)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND

    # REST reads by id: not found (or forbidden) for B, found for A
    for path in (f"/api/v1/stable/workflow-runs/{run}", f"/api/v1/stable/tasks/{task}"):
        assert engine.rest("GET", path, token=token_b).status_code in (403, 404), path
        assert engine.rest("GET", path).status_code == 200, path

    # REST under A's tenant path with B's token: forbidden
    since = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for method, path, body in (
        ("GET", f"/api/v1/tenants/{tenant_a}/worker", None),
        ("GET", f"/api/v1/stable/tenants/{tenant_a}/workflow-runs?since={since}", None),
        ("POST", f"/api/v1/stable/tenants/{tenant_a}/tasks/cancel", {"externalIds": [run]}),
    ):
        r = engine.rest(method, path, token=token_b, json=body)
        assert r.status_code == 403, (path, r.status_code, r.text)

    # B's own run list does not include A's run
    r = engine.rest(
        "GET", f"/api/v1/stable/tenants/{tenant_b}/workflow-runs?since={since}", token=token_b
    )
    assert r.status_code == 200, r.text
    assert run not in r.text and task not in r.text

    # B cancels "the run" through the SDK (REST, in B's tenant): nothing happens to A's run
    hatchet_b = engine.client(token_b)
    with contextlib.suppress(Exception):  # a refusal is fine, so is silence
        await hatchet_b.runs.aio_cancel(run)
    r = engine.rest(
        "POST",
        f"/api/v1/stable/tenants/{tenant_b}/tasks/cancel",
        token=token_b,
        json={"externalIds": [run, task]},
    )
    assert r.status_code in (200, 400, 404), r.text

    # B's worker serves a workflow of the same name, yet never gets A's task
    await asyncio.sleep(2)
    assert (await hatchet.runs.aio_get_details(run)).status == V1TaskStatus.QUEUED

    # positive controls: B's worker works for B's own run, and A can cancel A's run
    own = await asyncio.wait_for(define(hatchet_b)[ISOLATED].aio_run(), timeout=30)
    assert own["worker_name"] == worker_b.name
    assert (await hatchet.runs.aio_get_details(run)).status == V1TaskStatus.QUEUED
    await hatchet.runs.aio_cancel(run)
    for _ in range(40):
        if (await hatchet.runs.aio_get_details(run)).status == V1TaskStatus.CANCELLED:
            break
        await asyncio.sleep(0.25)
    else:
        raise AssertionError("tenant A could not cancel its own run")


def test_tenant_b_cannot_trigger_a_workflow_of_a(
    engine: Engine, channel: grpc.Channel, token_b: str, run_a: dict[str, str]
) -> None:
    # registered in A by `run_a`; B has no workflow of this name
    name = f"e2e-only-in-a-{uuid.uuid4().hex[:6]}"
    request = v1.CreateWorkflowVersionRequest(
        name=name,
        tasks=[v1.CreateTaskOpts(readable_id="t", action=f"{name}:t", timeout="60s")],
    )
    v1_grpc.AdminServiceStub(channel).PutWorkflow(
        request, metadata=bearer(engine.token), timeout=20
    )
    stub = WorkflowServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.TriggerWorkflow(
            TriggerWorkflowRequest(name=name, input="{}"), metadata=bearer(token_b), timeout=20
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not found" in (info.value.details() or "").lower()
    # A can
    resp = stub.TriggerWorkflow(
        TriggerWorkflowRequest(name=name, input="{}"), metadata=bearer(engine.token), timeout=20
    )
    assert resp.workflow_run_id
    # and B cannot read it
    with pytest.raises(grpc.RpcError) as info:
        _get_run_details(channel, token_b, resp.workflow_run_id)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def _minted(
    engine: Engine,
    *,
    expires_in: timedelta,
    token_id: str | None = None,
    secret: str = SIGNING_SECRET,
) -> str:
    now = datetime.now(UTC)
    return mint_token(
        secret=secret.encode(),
        tenant_id=engine.tenant_of(),
        token_id=token_id or str(uuid.uuid4()),
        server_url=engine.server_url,
        grpc_address=engine.host_port,
        expires_at=now + expires_in,
        issued_at=now - timedelta(days=1),
    )


def _tampered(token: str) -> str:
    header, claims, signature = token.split(".")
    return f"{header}.{claims}.{('A' if signature[0] != 'A' else 'B') + signature[1:]}"


def test_bad_tokens_are_rejected_on_rest(engine: Engine) -> None:
    tenant = engine.tenant_of()
    path = f"/api/v1/tenants/{tenant}/worker"
    assert engine.rest("GET", path).status_code == 200  # the real token works

    # an expired token must fail even with the id of a live token
    claims = engine.token.split(".")[1]
    real_token_id = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))[
        "token_id"
    ]
    bad = {
        "garbage": "garbage",
        "tampered": _tampered(engine.token),
        # correctly signed with the engine's key, but expired
        "expired": _minted(engine, expires_in=timedelta(seconds=-60), token_id=real_token_id),
        # correctly signed, unexpired, but never issued (no row in the token table)
        "unknown-token-id": _minted(engine, expires_in=timedelta(days=1)),
        # signed with another key
        "foreign-key": _minted(
            engine, expires_in=timedelta(days=1), secret="some-other-secret-0123456789"
        ),
    }
    for what, token in bad.items():
        r = engine.rest("GET", path, token=token)
        assert r.status_code == 401, (what, r.status_code, r.text)
    assert engine.rest("GET", path, auth=False).status_code == 401
    # and on gRPC the same tokens are UNAUTHENTICATED
    with engine.grpc_channel() as ch:
        for what, token in bad.items():
            with pytest.raises(grpc.RpcError) as info:
                _get_run_details(ch, token, str(uuid.uuid4()))
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, what
