"""Tasks: details, log lines, and bulk cancel / replay.

Cancel and replay take ``externalIds`` (run or task ids, the engine expands run ids) and/or a
``filter``; a filter is resolved here to the matching run ids, as Hatchet does, and the
engine is handed plain ids either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from aiohttp import web
from hatchet_sdk.clients.rest.models.v1_cancel_task_request import V1CancelTaskRequest
from hatchet_sdk.clients.rest.models.v1_cancelled_tasks import V1CancelledTasks
from hatchet_sdk.clients.rest.models.v1_log_line import V1LogLine
from hatchet_sdk.clients.rest.models.v1_log_line_level import V1LogLineLevel
from hatchet_sdk.clients.rest.models.v1_log_line_list import V1LogLineList
from hatchet_sdk.clients.rest.models.v1_log_line_order_by_direction import (
    V1LogLineOrderByDirection,
)
from hatchet_sdk.clients.rest.models.v1_replay_task_request import V1ReplayTaskRequest
from hatchet_sdk.clients.rest.models.v1_replayed_tasks import V1ReplayedTasks
from hatchet_sdk.clients.rest.models.v1_task_filter import V1TaskFilter

from hewer.engine.api.rest.context import control, path_uuid, reads, respond, tenant_id
from hewer.engine.api.rest.convert import Row, as_object, display_name, task_summary
from hewer.engine.api.rest.errors import BadRequest, NotFound
from hewer.engine.api.rest.params import (
    MAX_BULK_IDS,
    Query,
    aware,
    parse_enum_values,
    parse_kv_pairs,
    parse_uuid,
    read_json,
    validate_body,
)
from hewer.engine.services.reads import LogFilter, RunFilter

routes = web.RouteTableDef()

DEFAULT_LOG_LIMIT = 1000
# Stored level spellings (Python logging names) that Hatchet's four levels stand for.
_LEVEL_ALIASES = {
    "WARN": ("WARN", "WARNING"),
    "ERROR": ("ERROR", "CRITICAL", "FATAL"),
    "INFO": ("INFO",),
    "DEBUG": ("DEBUG",),
}
_LEVEL_OF = {alias: level for level, aliases in _LEVEL_ALIASES.items() for alias in aliases}


def log_level(stored: str | None) -> V1LogLineLevel:
    """The Hatchet level for a stored level name; unknown names read as INFO."""
    return V1LogLineLevel(_LEVEL_OF.get((stored or "").upper(), "INFO"))


def log_levels_filter(levels: Sequence[str]) -> list[str]:
    """Requested Hatchet levels widened to every stored spelling of them."""
    return [alias for level in levels for alias in _LEVEL_ALIASES[level]]


def log_line(row: Row, *, task_name: str) -> V1LogLine:
    retry_count = int(row["retry_count"])
    return V1LogLine(
        createdAt=row["created_at"],
        message=row["message"],
        metadata=as_object(row["metadata"]),
        taskExternalId=str(row["task_id"]),
        taskDisplayName=task_name,
        retryCount=retry_count,
        attempt=retry_count + 1,
        level=log_level(row["level"]),
    )


def filter_from_body(f: V1TaskFilter) -> RunFilter:
    """A bulk-operation filter; all metadata pairs must match, as the SDK's dict implies."""
    return RunFilter(
        since=aware(f.since),
        until=None if f.until is None else aware(f.until),
        statuses=[s.value for s in f.statuses] if f.statuses else None,
        workflow_ids=(
            [parse_uuid(w, "filter.workflowIds") for w in f.workflow_ids]
            if f.workflow_ids
            else None
        ),
        additional_metadata=(
            parse_kv_pairs(f.additional_metadata, "filter.additionalMetadata")
            if f.additional_metadata
            else None
        ),
        metadata_any=False,
    )


async def _target_ids(
    request: web.Request, body: V1CancelTaskRequest | V1ReplayTaskRequest
) -> list[str]:
    if body.external_ids is None and body.filter is None:
        raise BadRequest("externalIds or filter is required")
    ids = [parse_uuid(i, "externalIds") for i in body.external_ids or ()]
    if body.filter is not None:
        page = await reads(request).rest_page_runs(
            tenant_id(request), filter_from_body(body.filter), offset=0, limit=MAX_BULK_IDS
        )
        ids.extend(page.ids)
    return list(dict.fromkeys(ids))  # de-duplicated, order kept


async def _bulk(request: web.Request, action: Literal["cancel", "replay"]) -> list[str]:
    raw = await read_json(request)
    body: V1CancelTaskRequest | V1ReplayTaskRequest = (
        validate_body(V1CancelTaskRequest, raw)
        if action == "cancel"
        else validate_body(V1ReplayTaskRequest, raw)
    )
    ids = await _target_ids(request, body)
    if not ids:
        return []
    engine = control(request)
    run = engine.cancel if action == "cancel" else engine.replay
    return await run(tenant_id=tenant_id(request), external_ids=ids)


@routes.post("/api/v1/stable/tenants/{tenant}/tasks/cancel")
async def cancel_tasks(request: web.Request) -> web.Response:
    return respond(V1CancelledTasks(ids=await _bulk(request, "cancel")))


@routes.post("/api/v1/stable/tenants/{tenant}/tasks/replay")
async def replay_tasks(request: web.Request) -> web.Response:
    return respond(V1ReplayedTasks(ids=await _bulk(request, "replay")))


@routes.get("/api/v1/stable/tasks/{task}")
async def get_task(request: web.Request) -> web.Response:
    task = path_uuid(request, "task")
    found = await reads(request).rest_tasks(tenant_id(request), task_ids=[task])
    if not found:
        raise NotFound(f"task {task} not found")
    return respond(task_summary(found[0]))


@routes.get("/api/v1/stable/tasks/{task}/logs")
async def list_task_logs(request: web.Request) -> web.Response:
    db, tenant = reads(request), tenant_id(request)
    task = path_uuid(request, "task")
    found = await db.rest_tasks(tenant, task_ids=[task])
    if not found:
        raise NotFound(f"task {task} not found")
    q = Query(request.query)
    levels = q.many("levels")
    direction = q.one("order_by_direction") or V1LogLineOrderByDirection.DESC.value
    parse_enum_values([direction], V1LogLineOrderByDirection, "order_by_direction")
    attempt = q.opt_integer("attempt", minimum=1)
    f = LogFilter(
        since=q.timestamp("since"),
        until=q.timestamp("until"),
        search=q.one("search"),
        levels=(
            None
            if levels is None
            else log_levels_filter(parse_enum_values(levels, V1LogLineLevel, "levels"))
        ),
        retry_count=None if attempt is None else attempt - 1,
        oldest_first=direction == V1LogLineOrderByDirection.ASC.value,
        limit=q.integer("limit", default=DEFAULT_LOG_LIMIT, maximum=MAX_BULK_IDS),
    )
    name = display_name(found[0]["readable_id"], found[0]["created_at"])
    rows = await db.rest_task_logs(tenant, task, f)
    return respond(V1LogLineList(rows=[log_line(r, task_name=name) for r in rows]))
