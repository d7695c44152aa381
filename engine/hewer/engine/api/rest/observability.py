"""Rate limits, tenant metrics, task stats and Prometheus.

* ``GET /api/v1/tenants/{tenant}/rate-limits`` lists; the SDK upserts over gRPC
  (``PutRateLimit``); the Kubernetes operator uses Hewer's ``PUT``/``DELETE
  /api/v1/hewer/tenants/{tenant}/rate-limits/{key}`` (``{limit, duration}``).
* ``GET /api/v1/stable/tenants/{tenant}/task-metrics``: task counts by status.
* ``GET /api/v1/tenants/{tenant}/queue-metrics`` and ``/step-run-queue-metrics``.
* ``GET /api/v1/tenants/{tenant}/task-stats``: queued/running tasks per task name, in the
  format of Hatchet's "Task stats" page (for autoscalers such as KEDA).
* ``GET /api/v1/tenants/{tenant}/prometheus-metrics``: this tenant's samples, text format.
* ``GET /metrics`` (no token): every metric of this replica, for Prometheus.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from hatchet_sdk.clients.rest.models.queue_metrics import QueueMetrics
from hatchet_sdk.clients.rest.models.rate_limit import RateLimit
from hatchet_sdk.clients.rest.models.rate_limit_list import RateLimitList
from hatchet_sdk.clients.rest.models.task_stat import TaskStat
from hatchet_sdk.clients.rest.models.task_status_stat import TaskStatusStat
from hatchet_sdk.clients.rest.models.tenant_queue_metrics import TenantQueueMetrics
from hatchet_sdk.clients.rest.models.tenant_step_run_queue_metrics import (
    TenantStepRunQueueMetrics,
)
from hatchet_sdk.clients.rest.models.v1_task_run_metric import V1TaskRunMetric
from hatchet_sdk.clients.rest.models.v1_task_status import V1TaskStatus

from hewer.engine.api.rest.context import objects, reads, respond, tenant_id
from hewer.engine.api.rest.convert import dump, pagination
from hewer.engine.api.rest.errors import BadRequest, NotFound
from hewer.engine.api.rest.params import Query, read_json
from hewer.engine.core.rate_limits import check_rate_limit
from hewer.engine.services.metrics import CONTENT_TYPE, METRICS
from hewer.engine.services.reads import Reads

routes = web.RouteTableDef()

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000


@routes.get("/api/v1/tenants/{tenant}/rate-limits")
async def list_rate_limits(request: web.Request) -> web.Response:
    q = Query(request.query)
    offset = q.integer("offset", default=0)
    limit = q.integer("limit", default=DEFAULT_LIMIT, maximum=MAX_LIMIT)
    order_by = q.one("orderByField") or "key"
    if order_by not in ("key", "value", "limitValue"):
        raise BadRequest("orderByField must be key, value or limitValue")
    direction = (q.one("orderByDirection") or "asc").upper()
    if direction not in ("ASC", "DESC"):
        raise BadRequest("orderByDirection must be asc or desc")
    rows = await reads(request).page_rate_limits(
        tenant_id(request),
        search=q.one("search") or None,
        order_by=order_by,
        direction=direction,
        offset=offset,
        limit=limit,
    )
    total = int(rows[0]["total"]) if rows else 0
    return respond(
        RateLimitList(
            rows=[
                RateLimit(
                    key=r["key"],
                    tenantId=str(r["tenant_id"]),
                    limitValue=int(r["limit_value"]),
                    value=int(r["value"]),
                    window=r["duration"],
                    lastRefill=r["last_refill"],
                )
                for r in rows
            ],
            pagination=pagination(total=total, offset=offset, limit=limit),
        )
    )


@routes.put("/api/v1/hewer/tenants/{tenant}/rate-limits/{key}")
async def put_rate_limit(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    try:
        key, limit, duration = check_rate_limit(
            request.match_info["key"], body.get("limit"), body.get("duration")
        )
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    await objects(request).upsert_rate_limit(
        tenant_id=tenant_id(request), key=key, limit=limit, duration=duration
    )
    return respond({"key": key, "limit": limit, "duration": duration})


@routes.delete("/api/v1/hewer/tenants/{tenant}/rate-limits/{key}")
async def delete_rate_limit(request: web.Request) -> web.Response:
    key = request.match_info["key"]
    if not await objects(request).delete_rate_limit(tenant_id=tenant_id(request), key=key):
        raise NotFound(f"rate limit {key!r} not found")
    return web.Response(status=204)


@routes.get("/api/v1/stable/tenants/{tenant}/task-metrics")
async def task_metrics(request: web.Request) -> web.Response:
    q = Query(request.query)
    since = q.timestamp("since") or datetime.now(UTC) - timedelta(days=1)
    counts = await reads(request).task_status_counts(
        tenant_id(request),
        since=since,
        until=q.timestamp("until"),
        workflow_ids=q.id_values("workflow_ids"),
        parent_task_id=q.id_value("parent_task_external_id"),
        triggering_event_id=q.id_value("triggering_event_external_id"),
    )
    return respond(
        [
            dump(V1TaskRunMetric(status=status, count=counts.get(status.value, 0)))
            for status in (
                V1TaskStatus.QUEUED,
                V1TaskStatus.RUNNING,
                V1TaskStatus.COMPLETED,
                V1TaskStatus.CANCELLED,
                V1TaskStatus.FAILED,
            )
        ]
    )


@routes.get("/api/v1/tenants/{tenant}/queue-metrics")
async def queue_metrics(request: web.Request) -> web.Response:
    rows = await reads(request).workflow_queue_metrics(tenant_id(request))
    per: dict[str, dict[str, int]] = {}
    for r in rows:
        per.setdefault(r["name"], {})[r["status"]] = int(r["n"])

    def qm(counts: dict[str, int]) -> QueueMetrics:
        return QueueMetrics(
            numQueued=counts.get("QUEUED", 0), numRunning=counts.get("RUNNING", 0), numPending=0
        )

    total = {
        "QUEUED": sum(c.get("QUEUED", 0) for c in per.values()),
        "RUNNING": sum(c.get("RUNNING", 0) for c in per.values()),
    }
    return respond(TenantQueueMetrics(total=qm(total), workflow={k: qm(v) for k, v in per.items()}))


@routes.get("/api/v1/tenants/{tenant}/step-run-queue-metrics")
async def step_run_queue_metrics(request: web.Request) -> web.Response:
    tenant = tenant_id(request)
    queues: dict[str, Any] = {}
    for r in await reads(request).queue_depths():
        if str(r["tenant_id"]) == tenant:
            queues[r["action_id"]] = int(r["n"])
    return respond(TenantStepRunQueueMetrics(queues=queues))


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


@routes.get("/api/v1/tenants/{tenant}/task-stats")
async def task_stats(request: web.Request) -> web.Response:
    stats: dict[str, dict[str, Any]] = {}
    for r in await reads(request).task_stats(tenant_id(request)):
        entry = stats.setdefault(r["readable_id"], {})
        n = int(r["n"])
        if r["status"] == "QUEUED":
            q = entry.setdefault("queued", {"total": 0, "queues": {}, "concurrency": []})
            q["total"] += n
            q["queues"][r["action_id"]] = q["queues"].get(r["action_id"], 0) + n
            oldest = r["oldest_queued"]
        else:
            q = entry.setdefault("running", {"total": 0, "concurrency": []})
            q["total"] += n
            oldest = r["oldest_running"]
        if oldest is not None and (q.get("oldest") is None or oldest < q["oldest"]):
            q["oldest"] = oldest
    body = {
        name: dump(
            TaskStat(
                queued=None if "queued" not in s else TaskStatusStat.model_validate(s["queued"]),
                running=None if "running" not in s else TaskStatusStat.model_validate(s["running"]),
            )
        )
        for name, s in stats.items()
    }
    return respond(body)


async def refresh_gauges(db: Reads) -> None:
    METRICS.set_queue_depths(await db.queue_depths())
    METRICS.set_worker_slots(await db.worker_slot_totals())


@routes.get("/api/v1/tenants/{tenant}/prometheus-metrics")
async def tenant_prometheus(request: web.Request) -> web.Response:
    await refresh_gauges(reads(request))
    return web.Response(
        body=METRICS.render_tenant(tenant_id(request)),
        headers={"Content-Type": CONTENT_TYPE},
    )


@routes.get("/metrics")
async def prometheus(request: web.Request) -> web.Response:
    await refresh_gauges(reads(request))
    return web.Response(body=METRICS.render(), headers={"Content-Type": CONTENT_TYPE})
