"""Hewer's own REST endpoints for the Kubernetes operator, under ``/api/v1/hewer/``.

* ``declared-workflows/{name}``: PUT registers a workflow on behalf of a Workflow resource and
  marks it declared (a worker's registration then cannot replace it; the difference is
  reported as drift), GET reads the state, DELETE removes the workflow with its runs and crons.
* ``tokens``: POST mints a worker token for the tenant (WorkerPool Secrets), DELETE revokes one.
* ``owned``: which engine objects each resource owns (PUT/DELETE to record crons or rate
  limits created through the Hatchet-compatible endpoints; GET to list).

Authenticated like the rest of the API; the ``{tenant}`` segment must be the token's tenant.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web
from google.protobuf.json_format import MessageToDict, ParseDict, ParseError
from hatchet_sdk.contracts.v1.workflows_pb2 import CreateWorkflowVersionRequest

from hewer.engine.api.rest.context import AUTH, objects, path_uuid, reads, respond, tenant_id
from hewer.engine.api.rest.errors import ApiError, BadRequest, NotFound
from hewer.engine.api.rest.params import read_json
from hewer.engine.core.definition import InvalidDefinition, unenforced_settings
from hewer.engine.services.auth import AuthError
from hewer.engine.services.definitions import Definitions

__all__ = ["DEFINITIONS", "normalize_definition", "routes"]

routes = web.RouteTableDef()
DEFINITIONS = web.AppKey("definitions", Definitions)

_BASE = "/api/v1/hewer/tenants/{tenant}"
_OWNED_KINDS = frozenset({"workflow", "token", "cron", "rate_limit"})
_MAX_TOKEN_DAYS = 3650


class Conflict(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(409, message)


def normalize_definition(definition: Any) -> dict[str, Any]:
    """The registration in the form a worker's PutWorkflow produces (proto round trip).

    Unknown fields and wrong types are refused with a message naming them.
    """
    if not isinstance(definition, dict):
        raise BadRequest("definition must be an object (a CreateWorkflowVersionRequest)")
    try:
        message = ParseDict(definition, CreateWorkflowVersionRequest())
    except ParseError as exc:
        raise BadRequest(f"invalid definition: {exc}") from None
    return MessageToDict(message, preserving_proto_field_name=True)


def _resource(value: Any) -> str:
    text = str(value or "").strip()
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise BadRequest("resource must be 'namespace/name'")
    return text


def _definitions(request: web.Request) -> Definitions:
    return request.app[DEFINITIONS]


# -- declared workflows ----------------------------------------------------------------------


async def _declared_state(request: web.Request, name: str) -> dict[str, Any]:
    db, tenant = reads(request), tenant_id(request)
    row = await db.get_declared_workflow(tenant, name)
    if row is None:
        raise NotFound(f"workflow {name!r} is not declared")
    latest = await db.latest_version_by_name(tenant, name)
    return {
        "name": name,
        "resource": row["resource"],
        "workflowId": str(row["workflow_id"]),
        "versionId": None if latest is None else str(latest["version_id"]),
        "drift": row["drift"],
        "driftAt": None if row["drift_at"] is None else row["drift_at"].isoformat(),
        # what the declared definition asks for that this engine does not enforce yet
        "notEnforced": unenforced_settings(dict(row["definition"])),
    }


@routes.put(_BASE + "/declared-workflows/{name}")
async def put_declared_workflow(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("body must be an object {resource, definition}")
    resource = _resource(body.get("resource"))
    definition = normalize_definition(body.get("definition"))
    definition.setdefault("name", name)
    if definition["name"] != name:
        raise BadRequest(
            f"definition.name {definition['name']!r} differs from the path's name {name!r}"
        )
    db, tenant = reads(request), tenant_id(request)
    existing = await db.get_declared_workflow(tenant, name)
    if existing is not None and existing["resource"] != resource:
        raise Conflict(f"workflow {name!r} is already declared by {existing['resource']}")
    try:
        await _definitions(request).register(
            tenant_id=tenant, definition=definition, declared_by=resource
        )
    except InvalidDefinition as exc:
        raise BadRequest(str(exc)) from None
    return respond(await _declared_state(request, name))


@routes.get(_BASE + "/declared-workflows/{name}")
async def get_declared_workflow(request: web.Request) -> web.Response:
    return respond(await _declared_state(request, request.match_info["name"]))


@routes.delete(_BASE + "/declared-workflows/{name}")
async def delete_declared_workflow(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    tenant = tenant_id(request)
    row = await reads(request).get_declared_workflow(tenant, name)
    if row is None:
        raise NotFound(f"workflow {name!r} is not declared")
    wanted = request.query.get("resource")
    if wanted and wanted != row["resource"]:
        raise Conflict(f"workflow {name!r} is declared by {row['resource']}, not {wanted}")
    db = objects(request)
    workflow_id = await db.delete_workflow_by_name(tenant, name)
    if workflow_id is not None:
        await db.forget_owned_object(tenant_id=tenant, kind="workflow", object_id=workflow_id)
    return respond({"name": name, "workflowId": workflow_id, "deleted": workflow_id is not None})


# -- worker tokens -----------------------------------------------------------------------------


@routes.post(_BASE + "/tokens")
async def create_token(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("body must be an object {name, expiresInDays, resource?}")
    name = str(body.get("name") or "").strip()
    if not name:
        raise BadRequest("name is required")
    days = body.get("expiresInDays", 90)
    if not isinstance(days, int) or isinstance(days, bool) or not 0 < days <= _MAX_TOKEN_DAYS:
        raise BadRequest(f"expiresInDays must be an integer in 1..{_MAX_TOKEN_DAYS}")
    resource = None if body.get("resource") is None else _resource(body.get("resource"))
    auth, tenant = request.app[AUTH], tenant_id(request)
    token = await auth.issue(tenant_id=tenant, name=name, expires_in=timedelta(days=days))
    try:
        token_id = (await auth.authenticate(f"Bearer {token}")).token_id
    except AuthError as exc:  # pragma: no cover - a token we just minted
        raise ApiError(500, f"minted token does not verify: {exc}") from None
    if resource is not None:
        await objects(request).record_owned_object(
            tenant_id=tenant, kind="token", object_id=token_id, resource=resource
        )
    return respond({"token": token, "tokenId": token_id, "name": name})


@routes.delete(_BASE + "/tokens/{token_id}")
async def revoke_token(request: web.Request) -> web.Response:
    token_id = path_uuid(request, "token_id")
    db, tenant = objects(request), tenant_id(request)
    revoked = await db.revoke_tenant_api_token(tenant_id=tenant, token_id=token_id)
    if not revoked:
        raise NotFound(f"token {token_id} not found")
    await db.forget_owned_object(tenant_id=tenant, kind="token", object_id=token_id)
    return respond({"tokenId": token_id, "revoked": True})


# -- owned objects -----------------------------------------------------------------------------


def _kind(request: web.Request) -> str:
    kind = request.match_info["kind"]
    if kind not in _OWNED_KINDS:
        raise BadRequest(f"kind must be one of {sorted(_OWNED_KINDS)}")
    return kind


@routes.get(_BASE + "/owned")
async def list_owned(request: web.Request) -> web.Response:
    rows = await reads(request).owned_objects_of(
        tenant_id(request), request.query.get("resource") or None
    )
    return respond(
        {
            "rows": [
                {"kind": r["kind"], "objectId": r["object_id"], "resource": r["resource"]}
                for r in rows
            ]
        }
    )


@routes.put(_BASE + "/owned/{kind}/{object_id}")
async def record_owned(request: web.Request) -> web.Response:
    kind = _kind(request)
    body = await read_json(request)
    resource = _resource(body.get("resource") if isinstance(body, dict) else None)
    object_id = request.match_info["object_id"]
    await objects(request).record_owned_object(
        tenant_id=tenant_id(request), kind=kind, object_id=object_id, resource=resource
    )
    return respond({"kind": kind, "objectId": object_id, "resource": resource})


@routes.delete(_BASE + "/owned/{kind}/{object_id}")
async def forget_owned(request: web.Request) -> web.Response:
    kind = _kind(request)
    object_id = request.match_info["object_id"]
    found = await objects(request).forget_owned_object(
        tenant_id=tenant_id(request), kind=kind, object_id=object_id
    )
    if not found:
        raise NotFound(f"{kind} {object_id} is not recorded as owned")
    return respond({"kind": kind, "objectId": object_id})
