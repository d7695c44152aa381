"""Pushing events over REST, as Hatchet's API has it: ``POST /api/v1/tenants/{tenant}/events``
(one ``CreateEventRequest``, answers the ``Event``) and ``.../events/bulk`` (a
``BulkCreateEventRequest``, answers ``Events``). The events go through the same path as the
gRPC ``Push``: stored, then the workflows whose event triggers and filters match run.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from aiohttp import web
from hatchet_sdk.clients.rest.models.bulk_create_event_request import BulkCreateEventRequest
from hatchet_sdk.clients.rest.models.create_event_request import CreateEventRequest
from hatchet_sdk.clients.rest.models.event import Event
from hatchet_sdk.clients.rest.models.events import Events

from hewer.engine.api.rest.context import (
    check_payload_size,
    events,
    respond,
    tenant_id,
)
from hewer.engine.api.rest.convert import meta
from hewer.engine.api.rest.errors import BadRequest
from hewer.engine.api.rest.params import read_json, validate_body
from hewer.engine.services.events import NewEvent, StoredEvent
from hewer.engine.services.triggers import TriggerError

routes = web.RouteTableDef()


def _new_event(request: web.Request, body: CreateEventRequest) -> NewEvent:
    check_payload_size(request, body.data, what="event data")
    return NewEvent(
        key=body.key,
        payload=dict(body.data),
        additional_metadata=dict(body.additional_metadata or {}),
        priority=body.priority,
        scope=body.scope,
    )


def _event_model(tenant: str, stored: StoredEvent) -> Event:
    return Event(
        metadata=meta(stored.id, stored.created_at),
        key=stored.key,
        tenantId=tenant,
        additionalMetadata=stored.additional_metadata,
    )


async def _push(request: web.Request, new_events: list[NewEvent]) -> list[Event]:
    tenant = tenant_id(request)
    try:
        stored = await events(request).push(tenant_id=tenant, events=new_events)
    except TriggerError as exc:
        raise BadRequest(str(exc)) from None
    return [_event_model(tenant, s) for s in stored]


@routes.post("/api/v1/tenants/{tenant}/events")
async def create_event(request: web.Request) -> web.Response:
    body = validate_body(CreateEventRequest, await read_json(request))
    (event,) = await _push(request, [_new_event(request, body)])
    return respond(event)


@routes.post("/api/v1/tenants/{tenant}/events/bulk")
async def create_events(request: web.Request) -> web.Response:
    body = validate_body(BulkCreateEventRequest, await read_json(request))
    pushed = await _push(request, [_new_event(request, e) for e in body.events])
    # the list itself is no stored resource: a fresh id, as Hatchet answers
    return respond(Events(metadata=meta(uuid.uuid4(), datetime.now(UTC)), events=pushed))
