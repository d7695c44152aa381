"""Events: list and get, with counts of the runs each event triggered.

This endpoint's query keys are camelCase (``eventIds``, ``workflowIds``,
``additionalMetadata``, ``workflowRunStatuses``), unlike the run listing's snake_case; the
snake_case spellings are accepted as well.
"""

from __future__ import annotations

from aiohttp import web
from hatchet_sdk.clients.rest.models.v1_event import V1Event
from hatchet_sdk.clients.rest.models.v1_event_list import V1EventList
from hatchet_sdk.clients.rest.models.v1_event_triggered_run import V1EventTriggeredRun
from hatchet_sdk.clients.rest.models.v1_event_workflow_run_summary import (
    V1EventWorkflowRunSummary,
)

from hewer.engine.api.rest.context import path_uuid, reads, respond, tenant_id
from hewer.engine.api.rest.convert import Row, as_object, meta, pagination
from hewer.engine.api.rest.errors import NotFound
from hewer.engine.api.rest.params import Query, parse_kv_list, parse_statuses
from hewer.engine.services.reads import EventFilter

routes = web.RouteTableDef()

DEFAULT_LIMIT = 50
MAX_LIMIT = 10_000


def event_model(row: Row) -> V1Event:
    """A row of ``rest_events_full``."""
    return V1Event(
        metadata=meta(row["id"], row["created_at"]),
        key=row["key"],
        tenantId=str(row["tenant_id"]),
        workflowRunSummary=V1EventWorkflowRunSummary(
            running=int(row["running"]),
            queued=int(row["queued"]),
            succeeded=int(row["succeeded"]),
            failed=int(row["failed"]),
            cancelled=int(row["cancelled"]),
        ),
        additionalMetadata=as_object(row["additional_metadata"]),
        payload=as_object(row["payload"]),
        scope=row["scope"],
        seenAt=row["created_at"],
        triggeringWebhookName=row["triggering_webhook_name"],
        triggeredRuns=[V1EventTriggeredRun(workflowRunId=str(r)) for r in row["run_ids"]],
    )


def event_filter_from_query(q: Query) -> EventFilter:
    statuses = q.many("workflowRunStatuses", "workflow_run_statuses")
    metadata = q.many("additionalMetadata", "additional_metadata")
    return EventFilter(
        since=q.timestamp("since"),
        until=q.timestamp("until"),
        keys=q.many("keys"),
        event_ids=q.id_values("eventIds", "event_ids"),
        scopes=q.many("scopes"),
        additional_metadata=(
            None if metadata is None else parse_kv_list(metadata, "additionalMetadata")
        ),
        workflow_ids=q.id_values("workflowIds", "workflow_ids"),
        run_statuses=None if statuses is None else parse_statuses(statuses, "workflowRunStatuses"),
    )


@routes.get("/api/v1/stable/tenants/{tenant}/events")
async def list_events(request: web.Request) -> web.Response:
    db, tenant = reads(request), tenant_id(request)
    q = Query(request.query)
    f = event_filter_from_query(q)
    offset = q.integer("offset", default=0)
    limit = q.integer("limit", default=DEFAULT_LIMIT, maximum=MAX_LIMIT)
    page = await db.rest_page_events(tenant, f, offset=offset, limit=limit)
    by_id = {str(e["id"]): e for e in await db.rest_events(tenant, page.ids)}
    return respond(
        V1EventList(
            rows=[event_model(by_id[i]) for i in page.ids if i in by_id],
            pagination=pagination(total=page.total, offset=offset, limit=limit),
        )
    )


@routes.get("/api/v1/stable/tenants/{tenant}/events/{event}")
async def get_event(request: web.Request) -> web.Response:
    event_id = path_uuid(request, "event")
    found = await reads(request).rest_events(tenant_id(request), [event_id])
    if not found:
        raise NotFound(f"event {event_id} not found")
    return respond(event_model(found[0]))
