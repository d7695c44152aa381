"""Malformed requests never get a 5xx, gRPC UNKNOWN/INTERNAL or a traceback in the log.

A seeded generator sends at least 500 malformed REST requests (every route of the REST app,
with garbage paths, queries, bodies and headers) and 200 malformed gRPC messages (every method
of every service: undecodable bytes, and well-formed messages filled with hostile values),
with and without a valid token, to an engine of its own (the requests may create workers,
workflows and rate limits). Then the engine must still serve normally.
"""

from __future__ import annotations

import json
import random
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import requests
from e2e_support import Engine, bearer, start_engine
from google.protobuf import descriptor as pbd
from google.protobuf import message_factory
from google.protobuf.message import Message
from hatchet_sdk.contracts import dispatcher_pb2, events_pb2, workflows_pb2
from hatchet_sdk.contracts.v1 import dispatcher_pb2 as v1_dispatcher_pb2
from hatchet_sdk.contracts.v1 import workflows_pb2 as v1_workflows_pb2

from hewer.engine.api.rest.app import ROUTE_MODULES

pytestmark = pytest.mark.timeout(600)

SEED = 8
REST_REQUESTS = 560
GRPC_MESSAGES = 240
BAD_GRPC_CODES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


@pytest.fixture(scope="module")
def fuzz_engine() -> Iterator[Engine]:
    with start_engine() as engine:
        yield engine


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def _hostile_strings(rng: random.Random, tenant: str) -> list[str]:
    return [
        "",
        "\x00",
        "name\x00with-nul",
        "ünïcödé ☃ \U0001f600",
        "x" * rng.randint(1000, 5000),
        str(uuid.uuid4()),
        tenant,
        "not-a-uuid",
        "-1",
        "99999999999999999999999",
        "1e309",
        "2026-13-45T99:99:99Z",
        "{",
        '{"a": ',
        _deep(rng.randint(200, 3000)),
        '{"k": "\\u0000"}',
        '{"\\u0000": 1}',
        "null",
        "[]",
        '"str"',
        "true",
        "../../etc/passwd",
        "%00",
        "' OR 1=1 --",
        "\ud800".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
    ]


def _json_value(rng: random.Random, strings: list[str], depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 5)
    if kind == 0:
        return rng.choice(strings)
    if kind == 1:
        return rng.choice([0, -1, 2**63, -(2**70), 1.5, 1e308])
    if kind == 2:
        return rng.choice([True, False, None])
    if kind == 3:
        return json.loads(_deep(rng.randint(101, 400)))
    if kind == 4:
        return {"\x00key": "v", "k": "a\x00b"}
    if kind in (5, 6):
        return {rng.choice(strings): _json_value(rng, strings, depth + 1) for _ in range(3)}
    return [_json_value(rng, strings, depth + 1) for _ in range(3)]


def _body(rng: random.Random, strings: list[str]) -> tuple[bytes | None, str | None]:
    """``(raw body, content type)``."""
    kind = rng.randrange(8)
    if kind == 0:
        return None, None
    if kind == 1:
        return rng.randbytes(rng.randint(1, 300)), "application/json"
    if kind == 2:
        return b'{"name": "\xff\xfe"}', "application/json"
    if kind == 3:
        return _deep(rng.randint(150, 5000)).encode(), "application/json"
    if kind == 4:
        return b"\x00" * 10, "application/octet-stream"
    if kind == 5:
        # an object with the right keys' shapes but hostile values
        keys = [
            "name",
            "input",
            "workflowName",
            "key",
            "payload",
            "expression",
            "cron",
            "triggerAt",
            "additionalMetadata",
            "scopes",
            "limit",
            "duration",
            "value",
            "sourceName",
            "auth",
            "isPaused",
            "workflowIds",
            "externalIds",
            "filter",
        ]
        body = {k: _json_value(rng, strings) for k in rng.sample(keys, rng.randint(1, 8))}
        return json.dumps(body).encode(), "application/json"
    if kind == 6:
        return json.dumps(_json_value(rng, strings)).encode(), "application/json"
    return b"a=1&b=%00", "application/x-www-form-urlencoded"


def _routes() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for module in ROUTE_MODULES:
        for route in module.routes:
            path = getattr(route, "path", None)
            if path is not None:
                found.append((route.method, path))  # type: ignore[attr-defined]
    return found


def _fill_path(path: str, rng: random.Random, tenant: str, strings: list[str]) -> str:
    out = []
    for part in path.split("/"):
        if part.startswith("{") and part.endswith("}"):
            name = part[1:-1]
            if name == "tenant" and rng.random() < 0.7:
                value = tenant
            else:
                value = rng.choice(
                    [str(uuid.uuid4()), "not-a-uuid", "%00", "x" * 300, "%ff", "a%00b", tenant]
                )
            out.append(value)
        else:
            out.append(part)
    return "/".join(out)


def _query(rng: random.Random, strings: list[str]) -> dict[str, str]:
    names = [
        "limit",
        "offset",
        "since",
        "until",
        "statuses",
        "workflow_ids",
        "search",
        "only_tasks",
        "parent_task_external_id",
        "keys",
        "orderByField",
        "worker_id",
        "additional_metadata",
        "scopes",
        "level",
        "include_payloads",
    ]
    return {n: rng.choice(strings)[:2000] for n in rng.sample(names, rng.randint(0, 5))}


def _log_since(engine: Engine, offset: int) -> str:
    return engine.log_path.read_bytes()[offset:].decode("utf-8", "replace")


def _raw_http(engine: Engine, payload: bytes) -> bytes:
    host, port = engine.server_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(payload)
        return sock.recv(200)


def test_malformed_rest_requests(fuzz_engine: Engine) -> None:
    engine = fuzz_engine
    rng = random.Random(SEED)
    tenant = engine.tenant_of()
    strings = _hostile_strings(rng, tenant)
    routes = _routes()
    assert len(routes) > 40
    start = engine.log_path.stat().st_size
    statuses: dict[int, int] = {}
    failures: list[str] = []
    session = requests.Session()
    for i in range(REST_REQUESTS):
        method, template = routes[i % len(routes)] if i < len(routes) else rng.choice(routes)
        path = _fill_path(template, rng, tenant, strings)
        body, content_type = _body(rng, strings)
        headers = {}
        token_kind = rng.randrange(4)
        if token_kind < 2:
            headers["Authorization"] = f"Bearer {engine.token}"
        elif token_kind == 2:
            headers["Authorization"] = rng.choice(["Bearer x.y.z", "Basic abc", "Bearer \x7f"])
        if content_type:
            headers["Content-Type"] = content_type
        response = session.request(
            method,
            f"{engine.server_url}{path}",
            params=_query(rng, strings),
            data=body,
            headers=headers,
            timeout=30,
        )
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if response.status_code >= 500:
            failures.append(f"{method} {path} -> {response.status_code} {response.text[:200]}")
    # request lines and headers too long for the HTTP parser: 400, one warning line
    for payload in (
        b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n",
        b"GARBAGE\x00\x01\r\n\r\n",
    ):
        reply = _raw_http(engine, payload)
        assert reply.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), reply
    assert not failures, "\n".join(failures[:20])
    assert sum(statuses.values()) >= 500
    log = _log_since(engine, start)
    assert "Traceback" not in log, log[-4000:]
    assert " ERROR " not in log and "ERROR:" not in log, log[-4000:]
    engine.assert_alive()
    _serves_normally(engine)


def _message_classes() -> list[tuple[str, pbd.MethodDescriptor]]:
    methods = []
    for module in (dispatcher_pb2, events_pb2, workflows_pb2, v1_dispatcher_pb2, v1_workflows_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                methods.append((f"/{service.full_name}/{method.name}", method))
    return methods


def _fill(message: Message, rng: random.Random, strings: list[str], depth: int = 0) -> None:
    for field in message.DESCRIPTOR.fields:
        if rng.random() < 0.4:
            continue
        if field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                entry = field.message_type.fields_by_name
                target = getattr(message, field.name)
                key = rng.choice(strings)[:100]
                value_field = entry["value"]
                if value_field.message_type is not None:
                    _fill(target[key], rng, strings, depth + 1)
                elif value_field.type == pbd.FieldDescriptor.TYPE_STRING:
                    target[key] = rng.choice(strings)
                else:
                    target[key] = rng.randint(-5, 5)
            elif depth < 3:
                if field.is_repeated:
                    _fill(getattr(message, field.name).add(), rng, strings, depth + 1)
                else:
                    _fill(getattr(message, field.name), rng, strings, depth + 1)
            continue
        value = _scalar(field, rng, strings)
        if value is None:
            continue
        if field.is_repeated:
            getattr(message, field.name).append(value)
        else:
            setattr(message, field.name, value)


def _scalar(field: pbd.FieldDescriptor, rng: random.Random, strings: list[str]) -> Any:
    t = field.type
    if t == pbd.FieldDescriptor.TYPE_STRING:
        return rng.choice(strings)
    if t == pbd.FieldDescriptor.TYPE_BYTES:
        return rng.randbytes(20)
    if t == pbd.FieldDescriptor.TYPE_BOOL:
        return rng.random() < 0.5
    if t == pbd.FieldDescriptor.TYPE_ENUM:
        return rng.choice(field.enum_type.values).number
    if t in (pbd.FieldDescriptor.TYPE_DOUBLE, pbd.FieldDescriptor.TYPE_FLOAT):
        return rng.choice([0.0, -1.0, 1e30])
    if t in (pbd.FieldDescriptor.TYPE_UINT32, pbd.FieldDescriptor.TYPE_UINT64):
        return rng.choice([0, 1, 2**31])
    return rng.choice([0, -1, 1, 2**31 - 1, -(2**31)])


def _call(
    channel: grpc.Channel,
    name: str,
    method: pbd.MethodDescriptor,
    raw: bytes,
    metadata: tuple[tuple[str, str], ...],
) -> grpc.StatusCode:
    identity = lambda b: b  # noqa: E731 - raw bytes in and out
    try:
        if method.client_streaming and method.server_streaming:
            call = channel.stream_stream(
                name, request_serializer=identity, response_deserializer=identity
            )
            for _ in call(iter([raw]), timeout=2, metadata=metadata):
                pass
        elif method.server_streaming:
            call = channel.unary_stream(
                name, request_serializer=identity, response_deserializer=identity
            )
            for _ in call(raw, timeout=2, metadata=metadata):
                pass
        elif method.client_streaming:
            channel.stream_unary(name, request_serializer=identity, response_deserializer=identity)(
                iter([raw]), timeout=2, metadata=metadata
            )
        else:
            channel.unary_unary(name, request_serializer=identity, response_deserializer=identity)(
                raw, timeout=10, metadata=metadata
            )
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_malformed_grpc_messages(fuzz_engine: Engine) -> None:
    engine = fuzz_engine
    rng = random.Random(SEED + 1)
    strings = _hostile_strings(rng, engine.tenant_of())
    methods = _message_classes()
    assert len(methods) > 20
    start = engine.log_path.stat().st_size
    codes: dict[str, int] = {}
    failures: list[str] = []
    with grpc.insecure_channel(
        engine.host_port, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    ) as channel:
        for i in range(GRPC_MESSAGES):
            name, method = methods[i % len(methods)] if i < len(methods) else rng.choice(methods)
            if rng.random() < 0.4:
                raw = rng.randbytes(rng.randint(1, 200))  # mostly undecodable
            else:
                message = message_factory.GetMessageClass(method.input_type)()
                _fill(message, rng, strings)
                raw = message.SerializeToString()
            metadata = (
                bearer(engine.token)
                if rng.random() < 0.6
                else (() if rng.random() < 0.5 else bearer("x.y.z"))
            )
            code = _call(channel, name, method, raw, metadata)
            codes[code.name] = codes.get(code.name, 0) + 1
            if code in BAD_GRPC_CODES:
                failures.append(f"{name} -> {code.name}")
    assert not failures, "\n".join(failures[:20])
    assert sum(codes.values()) >= 200
    assert codes.get("INVALID_ARGUMENT", 0) > 50, codes
    assert codes.get("UNAUTHENTICATED", 0) > 30, codes
    log = _log_since(engine, start)
    assert "Traceback" not in log, log[-4000:]
    engine.assert_alive()
    _serves_normally(engine)


def _serves_normally(engine: Engine) -> None:
    tenant = engine.tenant_of()
    response = engine.rest(
        "GET", f"/api/v1/stable/tenants/{tenant}/workflow-runs?since=2020-01-01T00:00:00Z"
    )
    assert response.status_code == 200, response.text
    with engine.grpc_channel() as channel:
        stub = dispatcher_pb2_grpc_stub(channel)
        stub.GetVersion(
            dispatcher_pb2.GetVersionRequest(), metadata=bearer(engine.token), timeout=10
        )


def dispatcher_pb2_grpc_stub(channel: grpc.Channel) -> Any:
    from hatchet_sdk.contracts import dispatcher_pb2_grpc

    return dispatcher_pb2_grpc.DispatcherStub(channel)  # type: ignore[attr-defined]


def test_oversized_rest_input_is_413_naming_the_limit(fuzz_engine: Engine) -> None:
    tenant = fuzz_engine.tenant_of()
    path = f"/api/v1/stable/tenants/{tenant}/workflow-runs/trigger"
    # within the body limit, but the input alone is over HEWER_MAX_PAYLOAD_BYTES (4 MiB)
    body = {"workflowName": "any", "input": {"blob": "x" * (4 * 1024 * 1024 + 10)}}
    response = fuzz_engine.rest("POST", path, json=body)
    assert response.status_code == 413, response.text
    assert "HEWER_MAX_PAYLOAD_BYTES (4194304)" in response.text
    # over the body limit: refused before it is read in full
    body = {"workflowName": "any", "input": {"blob": "x" * (5 * 1024 * 1024)}}
    response = fuzz_engine.rest("POST", path, json=body)
    assert response.status_code == 413, response.text
    assert "HEWER_MAX_PAYLOAD_BYTES" in response.text
