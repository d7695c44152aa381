"""Workflow runs: listing, details, status, bulk id listing and triggering.

``GET .../workflow-runs`` with ``only_tasks=false`` has one row per run (a DAG's row lists
its tasks as ``children``; a single-task run's row is its task); with ``only_tasks=true``
one row per task.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from aiohttp import web
from hatchet_sdk.clients.rest.models.v1_task_summary import V1TaskSummary
from hatchet_sdk.clients.rest.models.v1_task_summary_list import V1TaskSummaryList
from hatchet_sdk.clients.rest.models.v1_trigger_workflow_run_request import (
    V1TriggerWorkflowRunRequest,
)
from hatchet_sdk.clients.rest.models.v1_workflow_run_details import V1WorkflowRunDetails

from hewer.engine.api.rest.context import (
    check_payload_size,
    control,
    path_uuid,
    reads,
    respond,
    tenant_id,
)
from hewer.engine.api.rest.convert import (
    pagination,
    run_summary,
    shape,
    task_event,
    task_summary,
    workflow_run,
)
from hewer.engine.api.rest.errors import ApiError, BadRequest, NotFound
from hewer.engine.api.rest.params import (
    MAX_BULK_IDS,
    Query,
    read_json,
    run_filter_from_query,
    validate_body,
)
from hewer.engine.services.reads import Reads, Record, RunFilter
from hewer.engine.services.triggers import IdempotencyCollision

routes = web.RouteTableDef()

# Hatchet's default page size for run listings.
DEFAULT_LIMIT = 50


async def list_summaries(
    db: Reads,
    tenant: str,
    f: RunFilter,
    *,
    only_tasks: bool,
    include_payloads: bool,
    offset: int,
    limit: int,
) -> tuple[int, list[V1TaskSummary]]:
    """``(total matches, rows of the page)``, newest first."""
    if only_tasks:
        page = await db.rest_page_tasks(tenant, f, offset=offset, limit=limit)
        by_id = {str(t["id"]): t for t in await db.rest_tasks(tenant, task_ids=page.ids)}
        rows = [
            task_summary(by_id[i], include_payloads=include_payloads)
            for i in page.ids
            if i in by_id
        ]
        return page.total, rows
    page = await db.rest_page_runs(tenant, f, offset=offset, limit=limit)
    runs = {str(r["id"]): r for r in await db.rest_runs(tenant, page.ids)}
    tasks_of = group_by_run(await db.rest_tasks(tenant, run_ids=page.ids))
    rows = [
        run_summary(runs[i], tasks_of.get(i, []), include_payloads=include_payloads)
        for i in page.ids
        if i in runs
    ]
    return page.total, rows


async def run_details(db: Reads, tenant: str, run_id: str) -> V1WorkflowRunDetails | None:
    found = await db.rest_runs(tenant, [run_id])
    if not found:
        return None
    run = found[0]
    tasks = await db.rest_tasks(tenant, run_ids=[run_id])
    events = await db.rest_run_task_events(tenant, run_id)
    steps = await db.rest_version_steps(tenant, [str(run["workflow_version_id"])])
    return V1WorkflowRunDetails(
        run=workflow_run(run, tasks),
        taskEvents=[e for e in (task_event(row) for row in events) if e is not None],
        shape=shape(run_id, steps, tasks),
        tasks=[task_summary(t) for t in tasks],
    )


async def _resolve_run(request: web.Request) -> tuple[Reads, str, str]:
    """``(repo, tenant, run id)`` for a path id that may name a run or one of its tasks."""
    db, tenant = reads(request), tenant_id(request)
    given = path_uuid(request, "run")
    run_id = await db.rest_resolve_run(tenant, given)
    if run_id is None:
        raise NotFound(f"workflow run {given} not found")
    return db, tenant, run_id


@routes.get("/api/v1/stable/tenants/{tenant}/workflow-runs")
async def list_runs(request: web.Request) -> web.Response:
    q = Query(request.query)
    f = run_filter_from_query(q)
    offset = q.integer("offset", default=0)
    limit = q.integer("limit", default=DEFAULT_LIMIT, maximum=MAX_BULK_IDS)
    total, rows = await list_summaries(
        reads(request),
        tenant_id(request),
        f,
        only_tasks=q.flag("only_tasks", default=False),
        include_payloads=q.flag("include_payloads", default=True),
        offset=offset,
        limit=limit,
    )
    return respond(
        V1TaskSummaryList(pagination=pagination(total=total, offset=offset, limit=limit), rows=rows)
    )


@routes.get("/api/v1/stable/tenants/{tenant}/workflow-runs/external-ids")
async def list_run_ids(request: web.Request) -> web.Response:
    f = run_filter_from_query(Query(request.query))
    page = await reads(request).rest_page_runs(tenant_id(request), f, offset=0, limit=MAX_BULK_IDS)
    return respond(page.ids)


@routes.get("/api/v1/stable/workflow-runs/{run}")
async def get_run(request: web.Request) -> web.Response:
    db, tenant, run_id = await _resolve_run(request)
    details = await run_details(db, tenant, run_id)
    if details is None:
        raise NotFound(f"workflow run {run_id} not found")
    return respond(details)


@routes.get("/api/v1/stable/workflow-runs/{run}/status")
async def get_run_status(request: web.Request) -> web.Response:
    db, tenant, run_id = await _resolve_run(request)
    found = await db.rest_runs(tenant, [run_id])
    if not found:
        raise NotFound(f"workflow run {run_id} not found")
    # the response is a bare JSON string, e.g. "COMPLETED"
    return respond(str(found[0]["status"]))


@routes.post("/api/v1/stable/tenants/{tenant}/workflow-runs/trigger")
async def trigger_run(request: web.Request) -> web.Response:
    body = validate_body(V1TriggerWorkflowRunRequest, await read_json(request))
    check_payload_size(request, body.input, what="input")
    tenant = tenant_id(request)
    try:
        run_id = await control(request).trigger(
            tenant_id=tenant,
            workflow_name=body.workflow_name,
            input=dict(body.input),
            additional_metadata=dict(body.additional_metadata or {}),
            priority=body.priority,
        )
    except IdempotencyCollision as exc:
        raise ApiError(409, str(exc)) from None
    except ValueError as exc:
        raise BadRequest(str(exc) or "invalid trigger request") from None
    details = await run_details(reads(request), tenant, run_id)
    if details is None:
        raise NotFound(f"workflow run {run_id} not found")
    return respond(details)


def group_by_run(tasks: Sequence[Record]) -> dict[str, list[Record]]:
    grouped: dict[str, list[Record]] = defaultdict(list)
    for t in tasks:
        grouped[str(t["workflow_run_id"])].append(t)
    return grouped
