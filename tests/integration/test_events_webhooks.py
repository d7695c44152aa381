"""Events with filters and scopes, the filter / webhook / CEL REST endpoints, webhook receive.

The engine services run in-process (:class:`Replica`) behind the real aiohttp app; bodies are
checked with the SDK's own models.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from hatchet_sdk.clients.rest.models.api_errors import APIErrors
from hatchet_sdk.clients.rest.models.event import Event
from hatchet_sdk.clients.rest.models.events import Events as EventsModel
from hatchet_sdk.clients.rest.models.v1_cel_debug_response import V1CELDebugResponse
from hatchet_sdk.clients.rest.models.v1_event_list import V1EventList
from hatchet_sdk.clients.rest.models.v1_filter import V1Filter
from hatchet_sdk.clients.rest.models.v1_filter_list import V1FilterList
from hatchet_sdk.clients.rest.models.v1_webhook import V1Webhook
from hatchet_sdk.clients.rest.models.v1_webhook_list import V1WebhookList
from tests.integration.harness import Replica

from hewer.engine.api.rest.app import build_app
from hewer.engine.services.auth import Authenticator
from hewer.engine.services.definitions import Definitions
from hewer.engine.services.events import Events, NewEvent
from hewer.engine.services.reads import Reads
from hewer.engine.services.secrets import SecretBox
from hewer.engine.services.tenant_objects import TenantObjects


def workflow(name: str, keys: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "event_triggers": keys,
        "tasks": [{"readable_id": "run", "action": f"{name}:run", "timeout": "60s"}],
        **extra,
    }


@dataclass
class World:
    replica: Replica
    events: Events
    client: TestClient[Any, Any]
    tenant: str
    token: str

    @property
    def base(self) -> str:
        return f"/api/v1/stable/tenants/{self.tenant}"

    async def call(
        self, method: str, path: str, body: Any = None, *, status: int = 200, auth: bool = True
    ) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
        resp = await self.client.request(
            method, self.base + path, headers=headers, json=body if body is not None else None
        )
        out = await resp.json()
        assert resp.status == status, out
        if status >= 400:
            APIErrors.from_dict(out)
        return out

    async def push(self, key: str, payload: dict[str, Any], scope: str | None = None) -> list[str]:
        stored = await self.events.push(
            tenant_id=self.tenant,
            events=[NewEvent(key=key, payload=payload, additional_metadata={}, scope=scope)],
        )
        return list(stored[0].run_ids)

    async def count(self, sql: str, *args: Any) -> int:
        return int(await self.replica.repo.pool.fetchval(sql, *args))


@pytest_asyncio.fixture
async def world(dsn: str) -> AsyncIterator[World]:
    replica = await Replica.start(dsn)
    repo = replica.repo
    tenant = await repo.ensure_tenant("default")
    auth = await Authenticator.create(
        repo=repo, configured_secret=None, server_url="http://x", grpc_address="x:1"
    )
    token = await auth.issue(tenant_id=tenant)
    events = Events(repo=repo, triggers=replica.triggers)
    box = await SecretBox.create(repo=repo, configured_key=None)
    app = build_app(
        reads=Reads(repo),
        objects=TenantObjects(repo),
        definitions=Definitions(repo),
        control=replica.control,
        auth=auth,
        events_service=events,
        secret_box=box,
    )
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield World(replica=replica, events=events, client=client, tenant=tenant, token=token)
    finally:
        await client.close()
        await replica.close()


async def test_trigger_rules_scopes_and_filter_payloads(world: World) -> None:
    filter_payload = base64.b64encode(json.dumps({"who": "default"}).encode()).decode()
    await world.replica.register(
        world.tenant,
        workflow(
            "filtered",
            ["user:*"],
            default_filters=[
                {"expression": "input.ok == true", "scope": "s1", "payload": filter_payload}
            ],
        ),
    )
    await world.replica.register(world.tenant, workflow("plain", ["user:create"]))

    # no filters: always; filters but no scope, or another scope: never
    assert len(await world.push("user:create", {"ok": True})) == 1
    assert len(await world.push("user:create", {"ok": True}, scope="other")) == 1
    assert await world.push("user:delete", {"ok": True}) == []
    # the filter's scope: one run per matching filter, with that filter's payload
    (run_id,) = await world.push("user:delete", {"ok": True}, scope="s1")
    extra = await world.count(
        "SELECT count(*) FROM tasks WHERE workflow_run_id = $1 "
        "AND payload_extra::jsonb -> 'triggers' -> 'filter_payload' ->> 'who' = 'default'",
        run_id,
    )
    assert extra == 1
    assert await world.push("user:delete", {"ok": False}, scope="s1") == []
    # a failing expression does not match; a second filter adds a run
    (wf,) = (await world.call("GET", "/filters"))["rows"]
    workflow_id = wf["workflowId"]
    await world.call(
        "POST",
        "/filters",
        {"workflowId": workflow_id, "expression": "input.missing == 1", "scope": "s1"},
    )
    created = await world.call(
        "POST",
        "/filters",
        {
            "workflowId": workflow_id,
            "expression": "event_key == 'user:delete'",
            "scope": "s1",
            "payload": {"n": 2},
        },
    )
    assert len(await world.push("user:delete", {"ok": True}, scope="s1")) == 2
    # re-registering keeps the declarative filter (same id), and does not touch API ones
    await world.replica.register(
        world.tenant,
        workflow(
            "filtered",
            ["user:*"],
            default_filters=[
                {"expression": "input.ok == true", "scope": "s1", "payload": filter_payload}
            ],
        ),
    )
    listed = V1FilterList.from_dict(await world.call("GET", f"/filters?workflowIds={workflow_id}"))
    assert listed is not None and listed.rows is not None
    assert len(listed.rows) == 3
    assert wf["metadata"]["id"] in {f.metadata.id for f in listed.rows}
    assert sum(1 for f in listed.rows if f.is_declarative) == 1
    assert created["metadata"]["id"] in {f.metadata.id for f in listed.rows}


async def test_filter_rest_errors_store_nothing(world: World) -> None:
    await world.replica.register(world.tenant, workflow("wf", ["k"]))
    workflow_id = str(
        await world.replica.repo.pool.fetchval("SELECT id FROM workflows WHERE name = 'wf'")
    )
    bad = {"workflowId": workflow_id, "expression": "input.x ==", "scope": "s"}
    await world.call("POST", "/filters", bad, status=400)
    unknown_wf = {
        "workflowId": "00000000-0000-0000-0000-000000000000",
        "expression": "true",
        "scope": "s",
    }
    await world.call("POST", "/filters", unknown_wf, status=400)
    assert await world.count("SELECT count(*) FROM event_filters") == 0

    made = V1Filter.from_dict(
        await world.call(
            "POST", "/filters", {"workflowId": workflow_id, "expression": "true", "scope": "s"}
        )
    )
    assert made is not None and made.payload == {} and made.is_declarative is False
    fid = made.metadata.id
    await world.call("PATCH", f"/filters/{fid}", {"expression": "nope ("}, status=400)
    updated = await world.call("PATCH", f"/filters/{fid}", {"scope": "t", "payload": {"a": 1}})
    assert updated["scope"] == "t" and updated["payload"] == {"a": 1}
    assert updated["expression"] == "true"
    assert (await world.call("GET", f"/filters/{fid}"))["scope"] == "t"
    missing = "00000000-0000-0000-0000-000000000001"
    await world.call("GET", f"/filters/{missing}", status=404)
    await world.call("PATCH", f"/filters/{missing}", {"scope": "x"}, status=404)
    await world.call("DELETE", f"/filters/{missing}", status=404)
    await world.call("GET", "/filters/not-a-uuid", status=400)
    await world.call("DELETE", f"/filters/{fid}")
    await world.call("GET", f"/filters/{fid}", status=404)


async def test_cel_debug(world: World) -> None:
    ok = await world.call(
        "POST",
        "/cel/debug",
        {
            "expression": "input.k == 'v' && additionalMetadata == null || payload.f == 1",
            "input": {"k": "v"},
            "filterPayload": {"f": 1},
        },
    )
    assert V1CELDebugResponse.from_dict(ok) is not None
    out = await world.call(
        "POST",
        "/cel/debug",
        {
            "expression": "input.k == 'v' && payload.f == 1",
            "input": {"k": "v"},
            "filterPayload": {"f": 1},
        },
    )
    assert out == {"status": "SUCCESS", "output": True}
    failed = await world.call("POST", "/cel/debug", {"expression": "input.k == 'v'", "input": {}})
    assert failed["status"] == "ERROR" and "k" in failed["error"]
    bad = await world.call("POST", "/cel/debug", {"expression": "input.k ==", "input": {}})
    assert bad["status"] == "ERROR"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_webhook_crud_and_receive(world: World) -> None:
    await world.replica.register(world.tenant, workflow("hooked", ["hook:test"]))
    spec = {
        "sourceName": "GENERIC",
        "name": "gh",
        "eventKeyExpression": "'hook:' + input.type",
        "scopeExpression": "headers['x-scope']",
        "staticPayload": {"static": True},
        "authType": "BASIC",
        "auth": {"username": "u", "password": "plain-password"},
    }
    made = V1Webhook.from_dict(await world.call("POST", "/webhooks", spec))
    assert (
        made is not None and made.auth_type == "BASIC" and made.static_payload == {"static": True}
    )
    await world.call("POST", "/webhooks", spec, status=400)  # the name is taken
    await world.call(
        "POST", "/webhooks", {**spec, "name": "bad", "eventKeyExpression": "'a' +"}, status=400
    )
    stored = await world.replica.repo.pool.fetchval(
        "SELECT secret_encrypted FROM webhooks WHERE name = 'gh'"
    )
    assert b"plain-password" not in bytes(stored)
    assert await world.count("SELECT count(*) FROM webhooks") == 1

    url = f"{world.base}/webhooks/gh"
    body = {"type": "test", "static": "overridden"}
    # wrong credentials: 403, no event; bad bodies: 400, no event
    for headers in ({}, basic("u", "nope"), {"Authorization": f"Bearer {world.token}"}):
        resp = await world.client.post(url, json=body, headers=headers)
        assert resp.status == 403, await resp.text()
    resp = await world.client.post(
        url,
        data=b"not json",
        headers={**basic("u", "plain-password"), "Content-Type": "text/plain"},
    )
    assert resp.status == 400
    assert await world.count("SELECT count(*) FROM events") == 0

    resp = await world.client.post(
        url, json=body, headers={**basic("u", "plain-password"), "X-Scope": "sc"}
    )
    assert resp.status == 200, await resp.text()
    out = await resp.json()
    assert out["message"] == "ok"
    event_id = out["event"]["metadata"]["id"]
    listed = V1EventList.from_dict(await world.call("GET", "/events"))
    assert listed is not None and listed.rows is not None
    (event,) = listed.rows
    assert event.metadata.id == event_id and event.key == "hook:test" and event.scope == "sc"
    assert event.triggering_webhook_name == "gh"
    assert event.payload == {"type": "test", "static": True}
    assert (
        await world.count(
            "SELECT count(*) FROM workflow_runs WHERE triggering_event_id = $1", event_id
        )
        == 1
    )

    # form bodies; a scope expression that fails (missing header) is a 400, nothing stored
    form_headers = basic("u", "plain-password")
    resp = await world.client.post(url, data={"type": "form"}, headers=form_headers)
    assert resp.status == 400
    assert await world.count("SELECT count(*) FROM events") == 1
    resp = await world.client.post(
        url, data={"type": "form"}, headers={**form_headers, "X-Scope": "f"}
    )
    assert resp.status == 200
    assert (await resp.json())["event"]["key"] == "hook:form"

    # update keeps what is not given; null scope clears it
    updated = await world.call("PATCH", "/webhooks/gh", {"scopeExpression": "input.type"})
    assert updated["scopeExpression"] == "input.type"
    assert updated["eventKeyExpression"] == spec["eventKeyExpression"]
    await world.call("PATCH", "/webhooks/gh", {"eventKeyExpression": "("}, status=400)
    assert (await world.call("GET", "/webhooks/gh"))["eventKeyExpression"] == spec[
        "eventKeyExpression"
    ]
    hooks = V1WebhookList.from_dict(await world.call("GET", "/webhooks?sourceNames=GENERIC"))
    assert hooks is not None and [h.name for h in hooks.rows or []] == ["gh"]
    await world.call("GET", "/webhooks/nope", status=404)
    await world.call("DELETE", "/webhooks/gh")
    resp = await world.client.post(url, json=body, headers=basic("u", "plain-password"))
    assert resp.status == 404
    # the other endpoints still need the token
    await world.call("GET", "/webhooks", status=401, auth=False)


async def test_hmac_and_api_key_webhooks(world: World) -> None:
    await world.call(
        "POST",
        "/webhooks",
        {
            "sourceName": "GITHUB",
            "name": "signed",
            "eventKeyExpression": "'x'",
            "authType": "HMAC",
            "auth": {
                "algorithm": "SHA512",
                "encoding": "BASE64URL",
                "signatureHeaderName": "X-Hub-Signature",
                "signingSecret": "shh",
            },
        },
    )
    raw = b'{"a": 1}'
    digest = hmac.new(b"shh", raw, hashlib.sha512).digest()
    good = base64.urlsafe_b64encode(digest).decode()
    url = f"{world.base}/webhooks/signed"
    ctype = {"Content-Type": "application/json"}
    resp = await world.client.post(url, data=raw, headers={**ctype, "X-Hub-Signature": good})
    assert resp.status == 200, await resp.text()
    resp = await world.client.post(url, data=raw + b" ", headers={**ctype, "X-Hub-Signature": good})
    assert resp.status == 403

    await world.call(
        "POST",
        "/webhooks",
        {
            "sourceName": "GENERIC",
            "name": "keyed",
            "eventKeyExpression": "'y'",
            "authType": "API_KEY",
            "auth": {"headerName": "X-Key", "apiKey": "k"},
            "returnEventAsResponsePayload": False,
        },
    )
    resp = await world.client.post(f"{world.base}/webhooks/keyed", json={}, headers={"x-key": "k"})
    assert resp.status == 200 and await resp.json() == {"message": "ok"}
    resp = await world.client.post(f"{world.base}/webhooks/keyed", json={}, headers={"x-key": "j"})
    assert resp.status == 403
    assert await world.count("SELECT count(*) FROM events") == 2


async def test_rest_event_push_one_and_bulk(world: World) -> None:
    """``POST /api/v1/tenants/{tenant}/events`` and ``.../events/bulk``, as Hatchet's REST API
    has them: the events are stored and trigger the workflows listening for their key."""
    await world.replica.register(world.tenant, workflow("pushed", ["order:*"]))
    base = f"/api/v1/tenants/{world.tenant}/events"
    headers = {"Authorization": f"Bearer {world.token}"}

    resp = await world.client.post(
        base,
        headers=headers,
        json={"key": "order:paid", "data": {"id": 7}, "additionalMetadata": {"src": "curl"}},
    )
    body = await resp.json()
    assert resp.status == 200, body
    event = Event.from_dict(body)
    assert event is not None
    assert (event.key, event.tenant_id) == ("order:paid", world.tenant)
    assert event.additional_metadata == {"src": "curl"}
    runs = await world.count(
        "SELECT count(*) FROM workflow_runs WHERE triggering_event_id = $1", event.metadata.id
    )
    assert runs == 1

    resp = await world.client.post(
        base + "/bulk",
        headers=headers,
        json={"events": [{"key": "order:a", "data": {}}, {"key": "other", "data": {"x": 1}}]},
    )
    body = await resp.json()
    assert resp.status == 200, body
    pushed = EventsModel.from_dict(body)
    assert pushed is not None
    assert [e.key for e in pushed.events] == ["order:a", "other"]
    stored = await world.count(
        "SELECT count(*) FROM events WHERE tenant_id = $1 AND key = ANY($2::text[])",
        world.tenant,
        ["order:a", "other"],
    )
    assert stored == 2

    # bad input is a 400 that names the problem, and stores nothing
    for bad in ({"data": {}}, {"key": "k", "data": []}, {"key": "", "data": {}}):
        resp = await world.client.post(base, headers=headers, json=bad)
        assert resp.status == 400, await resp.text()
    resp = await world.client.post(base + "/bulk", headers=headers, json={"events": []})
    assert resp.status == 400
    resp = await world.client.post(base, json={"key": "k", "data": {}})
    assert resp.status == 401
