"""Idempotency keys on the wire, beyond the official examples: bad configurations and keys
get INVALID_ARGUMENT with the reason, a duplicate gets Hatchet's ALREADY_EXISTS with its
detail (read the way the SDK reads it) over gRPC and a 409 naming the holder over REST."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from e2e_support import Engine, bearer
from grpc_status import rpc_status
from hatchet_sdk import IdempotencyCollisionError
from hatchet_sdk.clients.admin import TriggerWorkflowOptions
from hatchet_sdk.contracts import workflows_pb2_grpc as v0_grpc
from hatchet_sdk.contracts.v1 import workflows_pb2 as v1
from hatchet_sdk.contracts.v1 import workflows_pb2_grpc as v1_grpc
from hatchet_sdk.contracts.v1.shared.trigger_pb2 import TriggerWorkflowRequest

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def channel(engine: Engine) -> Iterator[grpc.Channel]:
    ch = engine.grpc_channel()
    yield ch
    ch.close()


def register(
    channel: grpc.Channel, engine: Engine, *, expression: str = "input.id", method: Any = v1.TTL
) -> str:
    name = f"e2e-idem-{uuid.uuid4().hex[:8]}"
    request = v1.CreateWorkflowVersionRequest(
        name=name,
        tasks=[v1.CreateTaskOpts(readable_id="run", action=f"{name}:run", timeout="60s")],
        idempotency=v1.IdempotencyConfig(expression=expression, ttl_ms=60_000, method=method),
    )
    v1_grpc.AdminServiceStub(channel).PutWorkflow(
        request, metadata=bearer(engine.token), timeout=20
    )
    return name


def trigger(channel: grpc.Channel, engine: Engine, name: str, input: Any) -> str:
    response = v0_grpc.WorkflowServiceStub(channel).TriggerWorkflow(
        TriggerWorkflowRequest(name=name, input=json.dumps(input)),
        metadata=bearer(engine.token),
        timeout=20,
    )
    return str(response.workflow_run_id)


def refused(channel: grpc.Channel, engine: Engine, name: str, input: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        trigger(channel, engine, name, input)
    return caught.value


def test_an_invalid_key_expression_is_refused_and_nothing_registered(
    channel: grpc.Channel, engine: Engine
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        register(channel, engine, expression="input.id +")
    err = caught.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'input.id +'" in (err.details() or "") and "invalid CEL" in (err.details() or "")


def test_a_key_that_cannot_be_derived_is_invalid_argument(
    channel: grpc.Channel, engine: Engine
) -> None:
    name = register(channel, engine)
    err = refused(channel, engine, name, {"other": 1})
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "could not be evaluated" in (err.details() or "")
    err = refused(channel, engine, name, {"id": 42})
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "must evaluate to a string, got int 42" in (err.details() or "")


def test_a_duplicate_gets_already_exists_with_the_holder(
    channel: grpc.Channel, engine: Engine
) -> None:
    name = register(channel, engine, method=v1.STATUS)
    first = trigger(channel, engine, name, {"id": "dup"})
    err = refused(channel, engine, name, {"id": "dup"})
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    assert err.details() == "idempotency key collision"
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    (detail,) = status.details
    info = v1.IdempotencyCollisionError()
    assert detail.Unpack(info)
    assert info.existing_run_external_id == first
    assert info.colliding_run_external_id not in ("", first)

    # the SDK turns it into its exception
    hatchet = engine.client()
    with pytest.raises(IdempotencyCollisionError) as caught:
        hatchet._client.admin.run_workflow(
            name, json.dumps({"id": "dup"}), TriggerWorkflowOptions()
        )
    assert caught.value.existing_run_external_id == first


def test_rest_trigger_of_a_duplicate_is_409_naming_the_holder(
    channel: grpc.Channel, engine: Engine
) -> None:
    name = register(channel, engine)
    path = f"/api/v1/stable/tenants/{engine.tenant_of()}/workflow-runs/trigger"
    body = {"workflowName": name, "input": {"id": "rest"}, "additionalMetadata": {}}
    created = engine.rest("POST", path, json=body)
    assert created.status_code == 200, created.text
    run_id = created.json()["run"]["metadata"]["id"]
    duplicate = engine.rest("POST", path, json=body)
    assert duplicate.status_code == 409, duplicate.text
    (error,) = duplicate.json()["errors"]
    assert run_id in error["description"] and "'rest'" in error["description"]
    engine.assert_alive()
