"""Incoming webhooks: CRUD by name, and the unauthenticated receive endpoint.

``POST /api/v1/stable/tenants/{tenant}/webhooks/{name}`` carries no bearer token (the auth
middleware lets exactly that method and path through): the webhook's own auth (basic, API
key or HMAC, see :mod:`hewer.engine.core.webhooks`) is checked instead, and a failure is a
403 that stores nothing. The body (JSON, or a form for generic and Slack sources) merged
with the webhook's static payload (static wins) becomes the event payload; the event key
and scope are CEL expressions over ``input`` (that payload) and ``headers``.
"""

from __future__ import annotations

import re
import time
from typing import Any

from aiohttp import web
from hatchet_sdk.clients.rest.models.v1_update_webhook_request import V1UpdateWebhookRequest
from hatchet_sdk.clients.rest.models.v1_webhook import V1Webhook
from hatchet_sdk.clients.rest.models.v1_webhook_api_key_auth import V1WebhookAPIKeyAuth
from hatchet_sdk.clients.rest.models.v1_webhook_basic_auth import V1WebhookBasicAuth
from hatchet_sdk.clients.rest.models.v1_webhook_hmac_auth import V1WebhookHMACAuth
from hatchet_sdk.clients.rest.models.v1_webhook_list import V1WebhookList

from hewer.engine.api.rest.context import events, objects, reads, respond, secrets, tenant_id
from hewer.engine.api.rest.convert import Row, as_object, dump, meta, pagination
from hewer.engine.api.rest.errors import ApiError, BadRequest, Forbidden, NotFound
from hewer.engine.api.rest.events import event_model
from hewer.engine.api.rest.params import Query, parse_uuid, read_json, validate_body
from hewer.engine.core import webhooks as hooks
from hewer.engine.core.cel import CelError, evaluate_string
from hewer.engine.core.cel import check as check_cel
from hewer.engine.services.events import NewEvent
from hewer.engine.services.secrets import SecretError
from hewer.engine.services.tenant_objects import NewWebhook
from hewer.engine.services.triggers import TriggerError

routes = web.RouteTableDef()

BASE = "/api/v1/stable/tenants/{tenant}/webhooks"
# the receive endpoint, which the auth middleware lets through without a bearer token
RECEIVE_PATH = re.compile(r"^/api/v1/stable/tenants/[^/]+/webhooks/[^/]+$")
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
MAX_NAME_LENGTH = 255


def is_receive(request: web.Request) -> bool:
    return request.method == "POST" and RECEIVE_PATH.match(request.path) is not None


def webhook_model(row: Row) -> V1Webhook:
    return V1Webhook(
        metadata=meta(row["id"], row["created_at"], row["updated_at"]),
        tenantId=str(row["tenant_id"]),
        name=row["name"],
        sourceName=row["source_name"],
        eventKeyExpression=row["event_key_expression"],
        scopeExpression=row["scope_expression"],
        staticPayload=None if row["static_payload"] is None else as_object(row["static_payload"]),
        authType=row["auth_type"],
        returnEventAsResponsePayload=bool(row["return_event"]),
    )


def _checked(expression: str, what: str) -> str:
    try:
        check_cel(expression)
    except CelError as exc:
        raise BadRequest(f"{what}: {exc}") from None
    return expression


def _text(body: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None or value == "":
        if required:
            raise BadRequest(f"{key} is required")
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string")
    return value


@routes.post(BASE)
async def create_webhook(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    name = _text(body, "name")
    assert name is not None
    if len(name) > MAX_NAME_LENGTH or "/" in name:
        raise BadRequest(f"name must be at most {MAX_NAME_LENGTH} characters, without '/'")
    source = _text(body, "sourceName")
    if source not in hooks.SOURCES:
        raise BadRequest(f"sourceName must be one of {', '.join(hooks.SOURCES)}")
    key_expression = _checked(str(_text(body, "eventKeyExpression")), "eventKeyExpression")
    scope_expression = _text(body, "scopeExpression", required=False)
    if scope_expression is not None:
        _checked(scope_expression, "scopeExpression")
    static_payload = body.get("staticPayload")
    if static_payload is not None and not isinstance(static_payload, dict):
        raise BadRequest("staticPayload must be a JSON object")
    return_event = body.get("returnEventAsResponsePayload", True)
    if not isinstance(return_event, bool):
        raise BadRequest("returnEventAsResponsePayload must be a boolean")
    auth_type = _text(body, "authType")
    auth = body.get("auth")
    box = secrets(request)
    fields: dict[str, Any]
    if auth_type == "BASIC":
        basic = validate_body(V1WebhookBasicAuth, auth)
        fields = {"basic_username": basic.username, "secret": basic.password}
    elif auth_type == "API_KEY":
        api_key = validate_body(V1WebhookAPIKeyAuth, auth)
        if not api_key.header_name or not api_key.api_key:
            raise BadRequest("auth.headerName and auth.apiKey are required")
        fields = {"api_key_header_name": api_key.header_name, "secret": api_key.api_key}
    elif auth_type == "HMAC":
        signed = validate_body(V1WebhookHMACAuth, auth)
        if not signed.signature_header_name or not signed.signing_secret:
            raise BadRequest("auth.signatureHeaderName and auth.signingSecret are required")
        fields = {
            "hmac_algorithm": signed.algorithm.value,
            "hmac_encoding": signed.encoding.value,
            "hmac_signature_header": signed.signature_header_name,
            "secret": signed.signing_secret,
        }
    else:
        raise BadRequest(f"authType must be one of {', '.join(hooks.AUTH_TYPES)}")
    secret = str(fields.pop("secret"))
    row = await objects(request).insert_webhook(
        tenant_id(request),
        NewWebhook(
            name=name,
            source_name=source,
            event_key_expression=key_expression,
            scope_expression=scope_expression,
            static_payload=static_payload,
            return_event=return_event,
            auth_type=auth_type,
            secret_encrypted=box.encrypt(secret),
            **fields,
        ),
    )
    if row is None:
        raise BadRequest(f"a webhook named {name!r} already exists")
    return respond(webhook_model(row))


@routes.get(BASE)
async def list_webhooks(request: web.Request) -> web.Response:
    q = Query(request.query)
    offset = q.integer("offset", default=0)
    limit = q.integer("limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    rows = await reads(request).list_webhooks(
        tenant_id(request),
        names=q.many("webhookNames", "webhook_names"),
        source_names=q.many("sourceNames", "source_names"),
        offset=offset,
        limit=limit,
    )
    total = int(rows[0]["total"]) if rows else 0
    return respond(
        V1WebhookList(
            rows=[webhook_model(r) for r in rows],
            pagination=pagination(total=total, offset=offset, limit=limit),
        )
    )


@routes.get(BASE + "/{webhook}")
async def get_webhook(request: web.Request) -> web.Response:
    name = request.match_info["webhook"]
    row = await reads(request).get_webhook(tenant_id(request), name)
    if row is None:
        raise NotFound(f"webhook {name!r} not found")
    return respond(webhook_model(row))


@routes.patch(BASE + "/{webhook}")
async def update_webhook(request: web.Request) -> web.Response:
    name = request.match_info["webhook"]
    raw = await read_json(request)
    body = validate_body(V1UpdateWebhookRequest, raw)
    given = set(raw) if isinstance(raw, dict) else set()
    if body.event_key_expression is not None:
        _checked(body.event_key_expression, "eventKeyExpression")
    scope: tuple[str | None] | None = None
    if "scopeExpression" in given:
        scope = (body.scope_expression or None,)
        if scope[0] is not None:
            _checked(scope[0], "scopeExpression")
    static: tuple[dict[str, Any] | None] | None = None
    if "staticPayload" in given:
        static = (body.static_payload,)
    row = await objects(request).update_webhook(
        tenant_id(request),
        name,
        event_key_expression=body.event_key_expression or None,
        scope_expression=scope,
        static_payload=static,
        return_event=body.return_event_as_response_payload,
    )
    if row is None:
        raise NotFound(f"webhook {name!r} not found")
    return respond(webhook_model(row))


@routes.delete(BASE + "/{webhook}")
async def delete_webhook(request: web.Request) -> web.Response:
    name = request.match_info["webhook"]
    row = await objects(request).delete_webhook(tenant_id(request), name)
    if row is None:
        raise NotFound(f"webhook {name!r} not found")
    return respond(webhook_model(row))


@routes.post(BASE + "/{webhook}")
async def receive_webhook(request: web.Request) -> web.Response:
    """The sender's endpoint; authenticated by the webhook's own method, not a token."""
    tenant = parse_uuid(request.match_info["tenant"], "tenant")
    name = request.match_info["webhook"]
    db = reads(request)
    row = await db.get_webhook(tenant, name)
    if row is None:
        raise NotFound(f"webhook {name!r} not found")
    raw = await request.read()
    challenge = hooks.slack_challenge(row["source_name"], raw)
    if challenge is not None:
        return respond({"challenge": challenge})
    try:
        secret = secrets(request).decrypt(row["secret_encrypted"])
    except SecretError as exc:
        raise ApiError(500, str(exc)) from None
    auth = hooks.WebhookAuth(
        source_name=row["source_name"],
        auth_type=row["auth_type"],
        secret=secret,
        basic_username=row["basic_username"],
        api_key_header_name=row["api_key_header_name"],
        hmac_algorithm=row["hmac_algorithm"],
        hmac_encoding=row["hmac_encoding"],
        hmac_signature_header=row["hmac_signature_header"],
    )
    try:
        hooks.verify(auth, body=raw, header=request.headers.get, now=time.time())
    except hooks.WebhookAuthError as exc:
        raise Forbidden(str(exc)) from None
    try:
        payload = hooks.parse_body(row["source_name"], request.content_type, raw)
    except hooks.WebhookBodyError as exc:
        raise BadRequest(str(exc)) from None
    if row["static_payload"]:
        payload = {**payload, **as_object(row["static_payload"])}
    variables = {
        "input": payload,
        "headers": hooks.lowercase_headers(list(request.headers.items())),
    }
    try:
        key = evaluate_string(row["event_key_expression"], variables)
    except CelError as exc:
        raise BadRequest(f"event key expression: {exc}") from None
    if not key:
        raise BadRequest("event key expression evaluated to an empty string")
    scope = None
    if row["scope_expression"]:
        try:
            scope = evaluate_string(row["scope_expression"], variables) or None
        except CelError as exc:
            raise BadRequest(f"scope expression: {exc}") from None
    try:
        stored = await events(request).push(
            tenant_id=tenant,
            events=[
                NewEvent(
                    key=key,
                    payload=payload,
                    additional_metadata={},
                    scope=scope,
                    webhook_name=name,
                )
            ],
        )
    except TriggerError as exc:
        raise BadRequest(str(exc)) from None
    response: dict[str, Any] = {"message": "ok"}
    if row["return_event"]:
        found = await db.rest_events(tenant, [stored[0].id])
        if found:
            response["event"] = dump(event_model(found[0]))
    return respond(response)
