"""Crons and one-time scheduled runs.

Crons: POST ``/tenants/{tenant}/workflows/{workflow name}/crons``, GET
``/tenants/{tenant}/workflows/crons`` and GET/DELETE/PATCH/POST (trigger now)
``/tenants/{tenant}/workflows/crons/{cron}``. Scheduled runs: the same shapes under
``scheduled``, plus ``bulk-delete`` and ``bulk-update``. The fixed paths are registered
before the ``{workflow}`` ones so that a workflow named ``crons`` cannot shadow them.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from hatchet_sdk.clients.rest.models.create_cron_workflow_trigger_request import (
    CreateCronWorkflowTriggerRequest,
)
from hatchet_sdk.clients.rest.models.cron_workflows import CronWorkflows
from hatchet_sdk.clients.rest.models.cron_workflows_list import CronWorkflowsList
from hatchet_sdk.clients.rest.models.cron_workflows_method import CronWorkflowsMethod
from hatchet_sdk.clients.rest.models.schedule_workflow_run_request import (
    ScheduleWorkflowRunRequest,
)
from hatchet_sdk.clients.rest.models.scheduled_workflows import ScheduledWorkflows
from hatchet_sdk.clients.rest.models.scheduled_workflows_bulk_delete_request import (
    ScheduledWorkflowsBulkDeleteRequest,
)
from hatchet_sdk.clients.rest.models.scheduled_workflows_bulk_delete_response import (
    ScheduledWorkflowsBulkDeleteResponse,
)
from hatchet_sdk.clients.rest.models.scheduled_workflows_bulk_error import (
    ScheduledWorkflowsBulkError,
)
from hatchet_sdk.clients.rest.models.scheduled_workflows_bulk_update_request import (
    ScheduledWorkflowsBulkUpdateRequest,
)
from hatchet_sdk.clients.rest.models.scheduled_workflows_bulk_update_response import (
    ScheduledWorkflowsBulkUpdateResponse,
)
from hatchet_sdk.clients.rest.models.scheduled_workflows_list import ScheduledWorkflowsList
from hatchet_sdk.clients.rest.models.scheduled_workflows_method import ScheduledWorkflowsMethod
from hatchet_sdk.clients.rest.models.update_cron_workflow_trigger_request import (
    UpdateCronWorkflowTriggerRequest,
)
from hatchet_sdk.clients.rest.models.update_scheduled_workflow_run_request import (
    UpdateScheduledWorkflowRunRequest,
)
from hatchet_sdk.clients.rest.models.workflow_run_status import WorkflowRunStatus

from hewer.engine.api.rest.context import path_uuid, reads, respond, tenant_id
from hewer.engine.api.rest.convert import Row, as_object, meta, pagination
from hewer.engine.api.rest.errors import ApiError, BadRequest, NotFound
from hewer.engine.api.rest.params import Query, parse_kv_list, read_json, validate_body
from hewer.engine.services.scheduling import Scheduling, SchedulingError

routes = web.RouteTableDef()
SCHEDULING = web.AppKey("scheduling", Scheduling)
Handler = Callable[[web.Request], Awaitable[web.Response]]

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
_BASE = "/api/v1/tenants/{tenant}/workflows"
_RUN_STATUS = {s.value for s in WorkflowRunStatus}


def scheduling(request: web.Request) -> Scheduling:
    return request.app[SCHEDULING]


def to_api_error(exc: SchedulingError) -> ApiError:
    status = {"not_found": 404, "conflict": 400}.get(exc.kind, 400)
    return ApiError(status, str(exc))


def scheduling_errors(handler: Handler) -> Handler:
    """A handler whose SchedulingError becomes the matching 4xx."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except SchedulingError as exc:
            raise to_api_error(exc) from None

    return wrapped


def _opt_priority(value: Any) -> int | None:
    return None if value is None else int(value)


def cron_model(row: Row) -> CronWorkflows:
    return CronWorkflows(
        metadata=meta(row["id"], row["created_at"], row["updated_at"]),
        tenantId=str(row["tenant_id"]),
        workflowVersionId=str(row["version_id"] or ""),
        workflowId=str(row["workflow_id"]),
        workflowName=row["workflow_name"],
        cron=row["expression"],
        name=row["name"] or None,
        input=as_object(row["input"]),
        additionalMetadata=as_object(row["additional_metadata"]),
        enabled=bool(row["enabled"]),
        method=CronWorkflowsMethod.API if row["origin"] == "api" else CronWorkflowsMethod.DEFAULT,
        priority=_opt_priority(row["priority"]),
    )


def scheduled_model(row: Row) -> ScheduledWorkflows:
    run_id = row["workflow_run_id"]
    run_status = row["run_status"]
    if run_status is None and row["status"] == "SCHEDULED":
        status: str | None = "SCHEDULED"
    elif run_status is None and row["status"] == "CANCELLED":
        status = "CANCELLED"
    elif run_status == "COMPLETED":
        status = "SUCCEEDED"
    else:
        status = run_status
    return ScheduledWorkflows(
        metadata=meta(row["id"], row["created_at"], row["updated_at"]),
        tenantId=str(row["tenant_id"]),
        workflowVersionId=str(row["version_id"] or ""),
        workflowId=str(row["workflow_id"]),
        workflowName=row["workflow_name"],
        triggerAt=row["trigger_at"],
        input=as_object(row["input"]),
        additionalMetadata=as_object(row["additional_metadata"]),
        workflowRunCreatedAt=row["run_created_at"],
        workflowRunStatus=WorkflowRunStatus(status) if status in _RUN_STATUS else None,
        workflowRunId=None if run_id is None else str(run_id),
        method=ScheduledWorkflowsMethod.API
        if row["origin"] == "api"
        else ScheduledWorkflowsMethod.DEFAULT,
        priority=_opt_priority(row["priority"]),
    )


def _direction(q: Query) -> str:
    value = (q.one("order_by_direction") or "DESC").upper()
    if value not in ("ASC", "DESC"):
        raise BadRequest("order_by_direction must be ASC or DESC")
    return value


def _metadata_filter(q: Query) -> dict[str, str] | None:
    pairs = q.many("additional_metadata")
    return None if not pairs else parse_kv_list(pairs, "additional_metadata")


# -- crons --------------------------------------------------------------------------------


async def _cron(request: web.Request, cron_id: str) -> CronWorkflows:
    rows = await reads(request).get_crons(tenant_id(request), [cron_id])
    if not rows:
        raise NotFound(f"cron {cron_id} not found")
    return cron_model(rows[0])


@routes.get(_BASE + "/crons")
async def list_crons(request: web.Request) -> web.Response:
    db, tenant = reads(request), tenant_id(request)
    q = Query(request.query)
    offset = q.integer("offset", default=0)
    limit = q.integer("limit", default=DEFAULT_LIMIT, maximum=MAX_LIMIT)
    order_by = q.one("order_by_field") or "createdAt"
    if order_by not in ("name", "createdAt"):
        raise BadRequest("order_by_field must be name or createdAt")
    page = await db.page_crons(
        tenant,
        workflow_id=q.id_value("workflow_id"),
        workflow_name=q.one("workflow_name") or None,
        cron_name=q.one("cron_name") or None,
        metadata=_metadata_filter(q),
        order_by=order_by,
        direction=_direction(q),
        offset=offset,
        limit=limit,
    )
    by_id = {str(r["id"]): r for r in await db.get_crons(tenant, page.ids)}
    return respond(
        CronWorkflowsList(
            rows=[cron_model(by_id[i]) for i in page.ids if i in by_id],
            pagination=pagination(total=page.total, offset=offset, limit=limit),
        )
    )


@routes.get(_BASE + "/crons/{cron}")
async def get_cron(request: web.Request) -> web.Response:
    return respond(await _cron(request, path_uuid(request, "cron")))


@routes.delete(_BASE + "/crons/{cron}")
@scheduling_errors
async def delete_cron(request: web.Request) -> web.Response:
    await scheduling(request).delete_cron(
        tenant_id=tenant_id(request), cron_id=path_uuid(request, "cron")
    )
    return web.Response(status=204)


@routes.patch(_BASE + "/crons/{cron}")
@scheduling_errors
async def update_cron(request: web.Request) -> web.Response:
    cron_id = path_uuid(request, "cron")
    body = validate_body(UpdateCronWorkflowTriggerRequest, await read_json(request))
    if body.enabled is not None:
        await scheduling(request).set_cron_enabled(
            tenant_id=tenant_id(request), cron_id=cron_id, enabled=body.enabled
        )
    return respond(await _cron(request, cron_id))


@routes.post(_BASE + "/crons/{cron}")
@scheduling_errors
async def trigger_cron(request: web.Request) -> web.Response:
    run_id = await scheduling(request).trigger_cron(
        tenant_id=tenant_id(request), cron_id=path_uuid(request, "cron")
    )
    # TriggerRunResult; built by hand: its field must be a 36-character id
    return respond({"externalId": run_id})


# -- scheduled runs -----------------------------------------------------------------------


async def _scheduled(request: web.Request, scheduled_id: str) -> ScheduledWorkflows:
    rows = await reads(request).get_scheduled(tenant_id(request), [scheduled_id])
    if not rows:
        raise NotFound(f"scheduled run {scheduled_id} not found")
    return scheduled_model(rows[0])


def _scheduled_statuses(q: Query) -> list[str] | None:
    values = q.many("statuses")
    if not values:
        return None
    allowed = {"SCHEDULED", "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "PENDING"}
    for v in values:
        if v not in allowed:
            raise BadRequest(f"statuses: unknown status {v!r}")
    return [("COMPLETED" if v == "SUCCEEDED" else v) for v in values] + (
        ["SUCCEEDED"] if "SUCCEEDED" in values else []
    )


@routes.get(_BASE + "/scheduled")
async def list_scheduled(request: web.Request) -> web.Response:
    db, tenant = reads(request), tenant_id(request)
    q = Query(request.query)
    offset = q.integer("offset", default=0)
    limit = q.integer("limit", default=DEFAULT_LIMIT, maximum=MAX_LIMIT)
    order_by = q.one("order_by_field") or "triggerAt"
    if order_by not in ("triggerAt", "createdAt"):
        raise BadRequest("order_by_field must be triggerAt or createdAt")
    page = await db.page_scheduled(
        tenant,
        workflow_id=q.id_value("workflow_id"),
        parent_task_id=q.id_value("parent_step_run_id"),
        metadata=_metadata_filter(q),
        statuses=_scheduled_statuses(q),
        order_by=order_by,
        direction=(q.one("order_by_direction") or "ASC").upper(),
        offset=offset,
        limit=limit,
    )
    by_id = {str(r["id"]): r for r in await db.get_scheduled(tenant, page.ids)}
    return respond(
        ScheduledWorkflowsList(
            rows=[scheduled_model(by_id[i]) for i in page.ids if i in by_id],
            pagination=pagination(total=page.total, offset=offset, limit=limit),
        )
    )


@routes.post(_BASE + "/scheduled/bulk-delete")
async def bulk_delete_scheduled(request: web.Request) -> web.Response:
    tenant = tenant_id(request)
    body = validate_body(ScheduledWorkflowsBulkDeleteRequest, await read_json(request))
    ids: list[str] = list(body.scheduled_workflow_run_ids or [])
    if body.filter is not None:
        f = body.filter
        page = await reads(request).page_scheduled(
            tenant,
            workflow_id=f.workflow_id,
            parent_task_id=f.parent_step_run_id,
            metadata=None
            if not f.additional_metadata
            else parse_kv_list(f.additional_metadata, "additional_metadata"),
            statuses=None,
            order_by="triggerAt",
            direction="ASC",
            offset=0,
            limit=10_000,
        )
        ids.extend(page.ids)
    if not ids and body.filter is None:
        raise BadRequest("give scheduledWorkflowRunIds or a filter")
    deleted = await scheduling(request).delete_scheduled(tenant_id=tenant, ids=ids)
    errors = [
        ScheduledWorkflowsBulkError(id=i, error="scheduled run not found")
        for i in ids
        if i not in set(deleted)
    ]
    return respond(ScheduledWorkflowsBulkDeleteResponse(deletedIds=deleted, errors=errors))


@routes.post(_BASE + "/scheduled/bulk-update")
async def bulk_update_scheduled(request: web.Request) -> web.Response:
    tenant = tenant_id(request)
    body = validate_body(ScheduledWorkflowsBulkUpdateRequest, await read_json(request))
    updated: list[str] = []
    errors: list[ScheduledWorkflowsBulkError] = []
    for item in body.updates:
        try:
            await scheduling(request).reschedule(
                tenant_id=tenant, scheduled_id=item.id, trigger_at=item.trigger_at
            )
            updated.append(item.id)
        except SchedulingError as exc:
            errors.append(ScheduledWorkflowsBulkError(id=item.id, error=str(exc)))
    return respond(ScheduledWorkflowsBulkUpdateResponse(updatedIds=updated, errors=errors))


@routes.get(_BASE + "/scheduled/{scheduled}")
async def get_scheduled(request: web.Request) -> web.Response:
    return respond(await _scheduled(request, path_uuid(request, "scheduled")))


@routes.delete(_BASE + "/scheduled/{scheduled}")
async def delete_scheduled(request: web.Request) -> web.Response:
    scheduled_id = path_uuid(request, "scheduled")
    deleted = await scheduling(request).delete_scheduled(
        tenant_id=tenant_id(request), ids=[scheduled_id]
    )
    if not deleted:
        raise NotFound(f"scheduled run {scheduled_id} not found")
    return web.Response(status=204)


@routes.patch(_BASE + "/scheduled/{scheduled}")
@scheduling_errors
async def reschedule(request: web.Request) -> web.Response:
    scheduled_id = path_uuid(request, "scheduled")
    body = validate_body(UpdateScheduledWorkflowRunRequest, await read_json(request))
    await scheduling(request).reschedule(
        tenant_id=tenant_id(request), scheduled_id=scheduled_id, trigger_at=body.trigger_at
    )
    return respond(await _scheduled(request, scheduled_id))


@routes.post(_BASE + "/scheduled/{scheduled}")
@scheduling_errors
async def trigger_scheduled(request: web.Request) -> web.Response:
    run_id = await scheduling(request).trigger_scheduled(
        tenant_id=tenant_id(request), scheduled_id=path_uuid(request, "scheduled")
    )
    return respond({"externalId": run_id})


# -- creation by workflow name (after the fixed paths) ----------------------------------------


@routes.post(_BASE + "/{workflow}/crons")
@scheduling_errors
async def create_cron(request: web.Request) -> web.Response:
    body = validate_body(CreateCronWorkflowTriggerRequest, await read_json(request))
    tenant = tenant_id(request)
    cron_id = await scheduling(request).create_cron(
        tenant_id=tenant,
        workflow_name=request.match_info["workflow"],
        name=body.cron_name,
        expression=body.cron_expression,
        input=body.input,
        metadata=body.additional_metadata,
        priority=body.priority,
    )
    return respond(await _cron(request, cron_id))


@routes.post(_BASE + "/{workflow}/scheduled")
@scheduling_errors
async def create_scheduled(request: web.Request) -> web.Response:
    body = validate_body(ScheduleWorkflowRunRequest, await read_json(request))
    created = await scheduling(request).schedule(
        tenant_id=tenant_id(request),
        workflow_name=request.match_info["workflow"],
        trigger_at=[body.trigger_at],
        input=body.input,
        metadata=body.additional_metadata,
        priority=body.priority,
    )
    return respond(await _scheduled(request, created.ids[0]))
