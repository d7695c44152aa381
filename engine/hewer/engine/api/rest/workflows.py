"""Workflow definitions (list, get, version) and the tenant itself.

``Workflow.id`` in the SDK lists workflows with ``name=<its name>`` and picks the row whose
name is equal, so the name filter is a case-insensitive substring match that sorts the exact
match first (a ``limit=1`` lookup still finds it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from aiohttp import web
from hatchet_sdk.clients.rest.models.job import Job
from hatchet_sdk.clients.rest.models.step import Step
from hatchet_sdk.clients.rest.models.tenant import Tenant
from hatchet_sdk.clients.rest.models.tenant_version import TenantVersion
from hatchet_sdk.clients.rest.models.workflow import Workflow
from hatchet_sdk.clients.rest.models.workflow_list import WorkflowList
from hatchet_sdk.clients.rest.models.workflow_trigger_event_ref import WorkflowTriggerEventRef
from hatchet_sdk.clients.rest.models.workflow_triggers import WorkflowTriggers
from hatchet_sdk.clients.rest.models.workflow_version import WorkflowVersion
from hatchet_sdk.clients.rest.models.workflow_version_meta import WorkflowVersionMeta

from hewer.engine.api.rest.context import objects, path_uuid, reads, respond, tenant_id
from hewer.engine.api.rest.convert import Row, as_object, dump, meta, pagination
from hewer.engine.api.rest.errors import BadRequest, NotFound
from hewer.engine.api.rest.params import Query, read_json
from hewer.engine.api.rest.scheduling import SCHEDULING, scheduling_errors
from hewer.engine.core.definition import unenforced_settings
from hewer.engine.core.durations import InvalidDuration, parse_duration

routes = web.RouteTableDef()

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000


def workflow_model(row: Row, *, versions: Sequence[Row] | None = None) -> Workflow:
    workflow_id = str(row["id"])
    return Workflow(
        metadata=meta(workflow_id, row["created_at"], row["updated_at"]),
        name=row["name"],
        description=row["description"] or None,
        isPaused=bool(row["is_paused"]),
        versions=(
            None
            if versions is None
            else [version_meta(v, workflow_id=workflow_id) for v in versions]
        ),
        tenantId=str(row["tenant_id"]),
    )


def version_label(row: Row) -> str:
    """The version string the SDK registered, else the ordinal (the model requires one)."""
    return str(row["version"] or f"v{row['ordinal']}")


def version_meta(row: Row, *, workflow_id: str) -> WorkflowVersionMeta:
    return WorkflowVersionMeta(
        metadata=meta(row["id"], row["created_at"]),
        version=version_label(row),
        order=int(row["ordinal"]),
        workflowId=workflow_id,
    )


def step_models(
    steps: Sequence[Row], *, tenant: str, job_id: str, created_at: datetime
) -> list[Step]:
    """Steps with ``parents``/``children`` as step ids, as Hatchet reports them."""
    id_of = {s["readable_id"]: str(s["id"]) for s in steps}
    children: dict[str, list[str]] = {str(s["id"]): [] for s in steps}
    for s in steps:
        for parent in s["parents"] or ():
            if parent in id_of:
                children[id_of[parent]].append(str(s["id"]))
    return [
        Step(
            metadata=meta(s["id"], created_at),
            readableId=s["readable_id"],
            tenantId=tenant,
            jobId=job_id,
            action=s["action_id"],
            timeout=f"{int(s['timeout_seconds'])}s",
            isDurable=bool(s["is_durable"]),
            slotRequests={str(k): int(v) for k, v in as_object(s["slot_requests"]).items()},
            children=children[str(s["id"])],
            parents=[id_of[p] for p in s["parents"] or () if p in id_of],
        )
        for s in steps
    ]


def version_model(
    version: Row,
    *,
    workflow: Row,
    steps: Sequence[Row],
    event_keys: Sequence[str],
) -> WorkflowVersion:
    """A version with its single job (Hatchet v1 has one job per version; the job id is the
    version id, since we do not store jobs separately)."""
    version_id = str(version["id"])
    tenant = str(workflow["tenant_id"])
    created_at: datetime = version["created_at"]
    job = Job(
        metadata=meta(version_id, created_at),
        tenantId=tenant,
        versionId=version_id,
        name=workflow["name"],
        steps=step_models(steps, tenant=tenant, job_id=version_id, created_at=created_at),
    )
    return WorkflowVersion(
        metadata=meta(version_id, created_at),
        version=version_label(version),
        order=int(version["ordinal"]),
        workflowId=str(workflow["id"]),
        sticky=version["sticky"],
        defaultPriority=int(version["default_priority"]),
        workflow=workflow_model(workflow),
        triggers=WorkflowTriggers(
            workflow_version_id=version_id,
            tenant_id=tenant,
            events=[WorkflowTriggerEventRef(parent_id=version_id, event_key=k) for k in event_keys],
        ),
        jobs=[job],
    )


def tenant_model(row: Row) -> Tenant:
    return Tenant(
        metadata=meta(row["id"], row["created_at"]),
        name=row["name"],
        slug=row["name"],
        analyticsOptOut=True,
        alertMemberEmails=False,
        version=TenantVersion.V1,
    )


async def _workflow(request: web.Request) -> Row:
    workflow_id = path_uuid(request, "workflow")
    found = await reads(request).rest_workflows(tenant_id(request), [workflow_id])
    if not found:
        raise NotFound(f"workflow {workflow_id} not found")
    return found[0]


@routes.get("/api/v1/tenants/{tenant}/workflows")
async def list_workflows(request: web.Request) -> web.Response:
    db, tenant = reads(request), tenant_id(request)
    q = Query(request.query)
    offset = q.integer("offset", default=0)
    limit = q.integer("limit", default=DEFAULT_LIMIT, maximum=MAX_LIMIT)
    page = await db.rest_page_workflows(tenant, name=q.one("name"), offset=offset, limit=limit)
    by_id = {str(w["id"]): w for w in await db.rest_workflows(tenant, page.ids)}
    return respond(
        WorkflowList(
            rows=[workflow_model(by_id[i]) for i in page.ids if i in by_id],
            pagination=pagination(total=page.total, offset=offset, limit=limit),
        )
    )


@routes.get("/api/v1/workflows/{workflow}")
async def get_workflow(request: web.Request) -> web.Response:
    workflow = await _workflow(request)
    versions = await reads(request).rest_workflow_versions(tenant_id(request), str(workflow["id"]))
    return respond(workflow_model(workflow, versions=versions))


@routes.get("/api/v1/workflows/{workflow}/versions")
async def get_workflow_version(request: web.Request) -> web.Response:
    workflow = await _workflow(request)
    db, tenant = reads(request), tenant_id(request)
    wanted = Query(request.query).id_value("version")
    versions = await db.rest_workflow_versions(tenant, str(workflow["id"]), version_id=wanted)
    if not versions:
        raise NotFound("workflow version not found")
    version = versions[0]
    version_id = str(version["id"])
    steps = await db.rest_version_steps(tenant, [version_id])
    keys = await db.rest_version_event_keys(tenant, version_id)
    body = dump(version_model(version, workflow=workflow, steps=steps, event_keys=keys))
    # Hewer's addition: settings of this version that are accepted but not enforced yet
    body["notEnforced"] = unenforced_settings(dict(version["definition"] or {}))
    return respond(body)


@routes.get("/api/v1/tenants/{tenant}")
async def get_tenant(request: web.Request) -> web.Response:
    row = await reads(request).get_tenant(tenant_id(request))
    if row is None:
        raise NotFound("tenant not found")
    return respond(tenant_model(row))


def _pause_settings(body: Any) -> tuple[str, float, str, str]:
    """``(action, queue TTL seconds, cron behaviour, scheduled behaviour)`` of a PATCH body."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    pause = body.get("pause")
    if not isinstance(pause, dict):
        raise BadRequest("request body needs a 'pause' object")
    action = pause.get("action")
    if action not in ("pause", "unpause"):
        raise BadRequest("pause.action must be 'pause' or 'unpause'")
    ttl_text = pause.get("pausedWorkflowQueueTTL") or "0s"
    try:
        ttl = parse_duration(str(ttl_text))
    except InvalidDuration as exc:
        raise BadRequest(f"pausedWorkflowQueueTTL: {exc}") from None
    cron = str(pause.get("pausedWorkflowCronRunQueueBehavior") or "QUEUE")
    scheduled = str(pause.get("pausedWorkflowScheduledRunQueueBehavior") or "QUEUE")
    return action, ttl, cron, scheduled


@routes.patch("/api/v1/workflows/{workflow}")
@scheduling_errors
async def update_workflow(request: web.Request) -> web.Response:
    """Pause or unpause. While paused, new and queued runs stay QUEUED (cancelled once
    ``pausedWorkflowQueueTTL`` passes); cron and scheduled runs are queued or dropped per
    the two behaviours."""
    workflow = await _workflow(request)
    action, ttl, cron, scheduled = _pause_settings(await read_json(request))
    service = request.app[SCHEDULING]
    if action == "pause":
        await service.pause(
            tenant_id=tenant_id(request),
            workflow_id=str(workflow["id"]),
            queue_ttl_seconds=ttl,
            cron_behavior=cron,
            scheduled_behavior=scheduled,
        )
    else:
        await service.unpause(tenant_id=tenant_id(request), workflow_id=str(workflow["id"]))
    return respond(workflow_model(await _workflow(request)))


@routes.delete("/api/v1/workflows/{workflow}")
async def delete_workflow(request: web.Request) -> web.Response:
    """Delete a workflow with its versions, crons, schedules and runs."""
    workflow_id = path_uuid(request, "workflow")
    if not await objects(request).delete_workflow(
        tenant_id=tenant_id(request), workflow_id=workflow_id
    ):
        raise NotFound(f"workflow {workflow_id} not found")
    return web.Response(status=204)
