"""Idempotency keys, the pure parts: the registration's config, a trigger's key, the batch
split, and the gRPC status a duplicate gets (read back the way the SDK reads it)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import status_pb2  # type: ignore[import-untyped]
from hatchet_sdk.contracts.v1 import workflows_pb2 as v1

from hewer.engine.api.grpc.idempotency import COLLISION_MESSAGE, collision_status
from hewer.engine.core.definition import InvalidDefinition
from hewer.engine.core.idempotency import (
    Collision,
    IdempotencyConfig,
    IdempotencyKeyError,
    IdempotencyMethod,
    first_of_each_key,
    idempotency_key,
    parse_idempotency,
)
from hewer.engine.services.triggers import IdempotencyCollision


def config(**raw: Any) -> IdempotencyConfig | None:
    return parse_idempotency("wf", {"idempotency": raw} if raw else {})


def test_absent_config_is_none() -> None:
    assert config() is None


def test_config_as_the_sdk_sends_it() -> None:
    # MessageToDict: int64 as a string, the default enum value (TTL) omitted
    assert config(expression="input.id", ttl_ms="60000") == IdempotencyConfig(
        expression="input.id", ttl_ms=60_000, method=IdempotencyMethod.TTL
    )
    status = config(expression="input.id", ttl_ms="10000", method="STATUS")
    assert status is not None and status.release_on_finish
    assert config(expression="x", ttl_ms=5, method=1) == IdempotencyConfig(
        expression="x", ttl_ms=5, method=IdempotencyMethod.STATUS
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"ttl_ms": "1000"}, "the key expression is required"),
        ({"expression": "input.id +", "ttl_ms": "1000"}, r"key expression 'input\.id \+': invalid"),
        ({"expression": "input.id"}, "ttl_ms must be positive"),
        ({"expression": "input.id", "ttl_ms": "-5"}, "ttl_ms must be positive"),
        ({"expression": "input.id", "ttl_ms": "soon"}, "ttl_ms must be an integer"),
        ({"expression": "input.id", "ttl_ms": str(10**15)}, "at most"),
        ({"expression": "input.id", "ttl_ms": "1", "method": "NEVER"}, "unknown method 'NEVER'"),
        ({"expression": "input.id", "ttl_ms": "1", "method": 7}, "unknown method 7"),
    ],
)
def test_bad_config_is_refused_with_the_field(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidDefinition, match=message) as caught:
        config(**raw)
    assert "workflow 'wf' idempotency" in str(caught.value)


def test_a_non_object_config_is_refused() -> None:
    with pytest.raises(InvalidDefinition, match="must be an object"):
        parse_idempotency("wf", {"idempotency": "input.id"})


KEYED = IdempotencyConfig(
    expression="input.id + ':' + additional_metadata.tenant",
    ttl_ms=1000,
    method=IdempotencyMethod.TTL,
)


def test_key_from_input_and_metadata() -> None:
    key = idempotency_key(KEYED, input={"id": "a"}, additional_metadata={"tenant": "t"})
    assert key == "a:t"


@pytest.mark.parametrize(
    ("input", "message"),
    [
        ({}, r"could not be evaluated: .*'id'"),
        ({"id": 3}, "could not be evaluated"),  # string + int has no overload
    ],
)
def test_key_evaluation_errors_are_reported(input: dict[str, Any], message: str) -> None:
    with pytest.raises(IdempotencyKeyError, match=message):
        idempotency_key(KEYED, input=input, additional_metadata={"tenant": "t"})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (7, "must evaluate to a string, got int 7"),
        (None, "must evaluate to a string, got null"),
        ({"a": 1}, "must evaluate to a string, got dict"),
        ("", "evaluated to an empty string"),
        ("x" * 2000, "longer than 1024 bytes"),
    ],
)
def test_keys_must_be_non_empty_strings(value: Any, message: str) -> None:
    plain = IdempotencyConfig(expression="input.id", ttl_ms=1, method=IdempotencyMethod.TTL)
    with pytest.raises(IdempotencyKeyError, match=message):
        idempotency_key(plain, input={"id": value}, additional_metadata={})


def test_first_of_each_key() -> None:
    firsts, repeats = first_of_each_key(["a", "b", "a", "c", "b", "a"])
    assert firsts == [0, 1, 3]
    assert repeats == {2: 0, 4: 1, 5: 0}
    assert first_of_each_key([]) == ([], {})


def collision(key: str, requested: str, existing: str) -> Collision:
    return Collision(key=key, requested_run_id=requested, existing_run_id=existing)


def test_single_trigger_status_carries_the_holder() -> None:
    exc = IdempotencyCollision(created=[], collisions=[collision("k", "new", "old")])
    assert "key 'k' is held by workflow run old" in str(exc)
    status = status_pb2.Status.FromString(collision_status(exc, bulk=False).SerializeToString())
    assert status.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert status.message == COLLISION_MESSAGE == "idempotency key collision"
    (detail,) = status.details
    assert detail.Is(v1.IdempotencyCollisionError.DESCRIPTOR)
    info = v1.IdempotencyCollisionError()
    detail.Unpack(info)
    assert (info.existing_run_external_id, info.colliding_run_external_id) == ("old", "new")


def test_bulk_status_lists_the_created_runs_and_every_collision() -> None:
    exc = IdempotencyCollision(
        created=["r1", "r2"], collisions=[collision("a", "n1", "r1"), collision("b", "n2", "x")]
    )
    assert "(and 1 more)" in str(exc)
    (detail,) = collision_status(exc, bulk=True).details
    assert detail.Is(v1.BulkTriggerIdempotencyCollisionError.DESCRIPTOR)
    info = v1.BulkTriggerIdempotencyCollisionError()
    detail.Unpack(info)
    assert list(info.successful_workflow_run_external_ids) == ["r1", "r2"]
    assert [c.existing_run_external_id for c in info.collisions] == ["r1", "x"]
