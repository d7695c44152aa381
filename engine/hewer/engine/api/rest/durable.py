"""Durable tasks: restore after eviction, and reset from a node (a new branch of the log)."""

from __future__ import annotations

from aiohttp import web
from hatchet_sdk.clients.rest.models.v1_branch_durable_task_request import (
    V1BranchDurableTaskRequest,
)
from hatchet_sdk.clients.rest.models.v1_branch_durable_task_response import (
    V1BranchDurableTaskResponse,
)
from hatchet_sdk.clients.rest.models.v1_restore_task_response import V1RestoreTaskResponse

from hewer.engine.api.rest.context import control, path_uuid, respond, tenant_id
from hewer.engine.api.rest.errors import BadRequest, NotFound
from hewer.engine.api.rest.params import parse_uuid, read_json, validate_body
from hewer.engine.services.durable import DurableRequestError, DurableTaskNotFound

routes = web.RouteTableDef()


@routes.post("/api/v1/stable/tasks/{task}/restore")
async def restore_task(request: web.Request) -> web.Response:
    task = path_uuid(request, "task")
    try:
        requeued = await control(request).restore(tenant_id=tenant_id(request), task_id=task)
    except DurableTaskNotFound as exc:
        raise NotFound(str(exc)) from None
    except DurableRequestError as exc:
        raise BadRequest(str(exc)) from None
    return respond(V1RestoreTaskResponse(requeued=requeued))


@routes.post("/api/v1/stable/tenants/{tenant}/durable-tasks/branch")
async def branch_durable_task(request: web.Request) -> web.Response:
    body = validate_body(V1BranchDurableTaskRequest, await read_json(request))
    task = parse_uuid(body.task_external_id, "taskExternalId")
    try:
        branch = await control(request).branch_durable_task(
            tenant_id=tenant_id(request),
            task_id=task,
            node_id=body.node_id,
            branch_id=body.branch_id,
        )
    except DurableTaskNotFound as exc:
        raise NotFound(str(exc)) from None
    except DurableRequestError as exc:
        raise BadRequest(str(exc)) from None
    return respond(
        V1BranchDurableTaskResponse(taskExternalId=task, nodeId=body.node_id, branchId=branch)
    )
