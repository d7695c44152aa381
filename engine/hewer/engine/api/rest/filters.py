"""Event filters: create, list, get, update and delete.

A filter's expression is compiled before anything is stored: one that does not compile is a
400 and leaves nothing behind. An unknown (or another tenant's) filter id is a 404.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from hatchet_sdk.clients.rest.models.v1_create_filter_request import V1CreateFilterRequest
from hatchet_sdk.clients.rest.models.v1_filter import V1Filter
from hatchet_sdk.clients.rest.models.v1_filter_list import V1FilterList
from hatchet_sdk.clients.rest.models.v1_update_filter_request import V1UpdateFilterRequest

from hewer.engine.api.rest.context import objects, path_uuid, reads, respond, tenant_id
from hewer.engine.api.rest.convert import Row, as_object, meta, pagination
from hewer.engine.api.rest.errors import BadRequest, NotFound
from hewer.engine.api.rest.params import Query, parse_uuid, read_json, validate_body
from hewer.engine.core.cel import CelError
from hewer.engine.core.cel import check as check_cel

routes = web.RouteTableDef()

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
BASE = "/api/v1/stable/tenants/{tenant}/filters"


def filter_model(row: Row) -> V1Filter:
    return V1Filter(
        metadata=meta(row["id"], row["created_at"], row["updated_at"]),
        tenantId=str(row["tenant_id"]),
        workflowId=str(row["workflow_id"]),
        scope=row["scope"],
        expression=row["expression"],
        payload=as_object(row["payload"]),
        isDeclarative=bool(row["is_declarative"]),
    )


def _checked(expression: str) -> str:
    try:
        check_cel(expression)
    except CelError as exc:
        raise BadRequest(str(exc)) from None
    return expression


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return value


@routes.post(BASE)
async def create_filter(request: web.Request) -> web.Response:
    body = validate_body(V1CreateFilterRequest, await read_json(request))
    workflow_id = parse_uuid(body.workflow_id, "workflowId")
    if not body.scope:
        raise BadRequest("scope is required")
    row = await objects(request).insert_filter(
        tenant_id=tenant_id(request),
        workflow_id=workflow_id,
        scope=body.scope,
        expression=_checked(body.expression),
        payload=_object(body.payload, "payload"),
    )
    if row is None:
        raise BadRequest(f"workflow {workflow_id} not found")
    return respond(filter_model(row))


@routes.get(BASE)
async def list_filters(request: web.Request) -> web.Response:
    q = Query(request.query)
    offset = q.integer("offset", default=0)
    limit = q.integer("limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    total, rows = await reads(request).page_filters(
        tenant_id(request),
        workflow_ids=q.id_values("workflowIds", "workflow_ids"),
        scopes=q.many("scopes"),
        offset=offset,
        limit=limit,
    )
    return respond(
        V1FilterList(
            rows=[filter_model(r) for r in rows],
            pagination=pagination(total=total, offset=offset, limit=limit),
        )
    )


@routes.get(BASE + "/{filter}")
async def get_filter(request: web.Request) -> web.Response:
    filter_id = path_uuid(request, "filter")
    row = await reads(request).get_filter(tenant_id(request), filter_id)
    if row is None:
        raise NotFound(f"filter {filter_id} not found")
    return respond(filter_model(row))


@routes.patch(BASE + "/{filter}")
async def update_filter(request: web.Request) -> web.Response:
    filter_id = path_uuid(request, "filter")
    body = validate_body(V1UpdateFilterRequest, await read_json(request))
    if body.scope is not None and not body.scope:
        raise BadRequest("scope must not be empty")
    row = await objects(request).update_filter(
        tenant_id(request),
        filter_id,
        expression=None if body.expression is None else _checked(body.expression),
        scope=body.scope,
        payload=None if body.payload is None else _object(body.payload, "payload"),
    )
    if row is None:
        raise NotFound(f"filter {filter_id} not found")
    return respond(filter_model(row))


@routes.delete(BASE + "/{filter}")
async def delete_filter(request: web.Request) -> web.Response:
    filter_id = path_uuid(request, "filter")
    row = await objects(request).delete_filter(tenant_id(request), filter_id)
    if row is None:
        raise NotFound(f"filter {filter_id} not found")
    return respond(filter_model(row))
