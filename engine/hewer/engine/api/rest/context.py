"""Per-application and per-request state shared by the handler modules.

Kept apart from ``app.py`` so that handler modules can import it without importing the
module that imports them.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from hewer.engine.api.rest.convert import dump
from hewer.engine.api.rest.errors import ApiError, Forbidden, Unauthorized
from hewer.engine.api.rest.params import parse_uuid
from hewer.engine.api.rest.protocols import RunControl
from hewer.engine.services.auth import Authenticator, Identity
from hewer.engine.services.events import Events
from hewer.engine.services.reads import Reads
from hewer.engine.services.secrets import SecretBox
from hewer.engine.services.tenant_objects import TenantObjects

READS = web.AppKey("reads", Reads)
OBJECTS = web.AppKey("objects", TenantObjects)
CONTROL = web.AppKey[RunControl]("control")
AUTH = web.AppKey("auth", Authenticator)
IDENTITY = web.RequestKey("identity", Identity)
# HEWER_MAX_PAYLOAD_BYTES: the largest run input / event payload accepted
MAX_PAYLOAD = web.AppKey("max_payload_bytes", int)
# event push (filters, webhooks) and secrets at rest; absent in apps built without them
EVENTS = web.AppKey("events", Events)
SECRETS = web.AppKey("secrets", SecretBox)


def reads(request: web.Request) -> Reads:
    return request.app[READS]


def objects(request: web.Request) -> TenantObjects:
    return request.app[OBJECTS]


def control(request: web.Request) -> RunControl:
    return request.app[CONTROL]


def events(request: web.Request) -> Events:
    found = request.app.get(EVENTS)
    if found is None:
        raise ApiError(503, "event ingestion is not available on this server")
    return found


def secrets(request: web.Request) -> SecretBox:
    found = request.app.get(SECRETS)
    if found is None:
        raise ApiError(503, "secret storage is not available on this server")
    return found


def max_payload_bytes(request: web.Request) -> int:
    return request.app[MAX_PAYLOAD]


def check_payload_size(request: web.Request, value: Any, *, what: str) -> None:
    """413 naming the limit when ``value`` encodes to more than HEWER_MAX_PAYLOAD_BYTES."""
    limit = max_payload_bytes(request)
    size = len(json.dumps(value).encode())
    if size > limit:
        raise ApiError(
            413, f"{what} is {size} bytes, larger than HEWER_MAX_PAYLOAD_BYTES ({limit})"
        )


def identity(request: web.Request) -> Identity:
    found: Identity | None = request.get(IDENTITY)
    if found is None:  # a route registered without going through the auth middleware
        raise Unauthorized("missing authorization token")
    return found


def tenant_id(request: web.Request) -> str:
    """The caller's tenant; for routes with a ``{tenant}`` segment the middleware has
    already checked that it is this one."""
    return identity(request).tenant_id


def check_path_tenant(request: web.Request, who: Identity) -> None:
    raw = request.match_info.get("tenant")
    if raw is None:
        return
    if parse_uuid(raw, "tenant") != who.tenant_id:
        raise Forbidden("the token does not grant access to this tenant")


def path_uuid(request: web.Request, name: str) -> str:
    return parse_uuid(request.match_info.get(name), name)


def respond(body: BaseModel | list[Any] | dict[str, Any] | str) -> web.Response:
    """A JSON response; SDK models are dumped in their camelCase wire form."""
    data = dump(body) if isinstance(body, BaseModel) else body
    return web.Response(text=json.dumps(data), content_type="application/json")
