"""What autoscalers read (``services/autoscaling.py``).

* ``GET /api/v1/tenants/{tenant}/task-stats``: runnable queued and running tasks per task
  name, in the format of Hatchet's "Task stats" page (KEDA's ``metrics-api`` trigger reads
  it with a ``valueLocation`` such as ``my-task.queued.total``).
* ``GET /api/v1/hewer/tenants/{tenant}/worker-pools/{pool}/stats?workflow=a&workflow=b``:
  one WorkerPool's aggregate: queued and running tasks of its workflows, the oldest queued
  task's age, and its workers (busy or idle, paused, their Pod).
* ``GET .../worker-pools/{pool}/wait?workflow=...&queued=N&timeoutSeconds=S``: the same
  answer, held until more than ``N`` tasks are queued or ``S`` seconds (at most 60) pass.
  The operator keeps one open per autoscaled pool, so a pool at zero replicas wakes on the
  first enqueue.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from hewer.engine.api.rest.context import respond, tenant_id
from hewer.engine.api.rest.errors import ApiError, BadRequest
from hewer.engine.api.rest.params import Query
from hewer.engine.services.autoscaling import (
    MAX_WAIT_SECONDS,
    Autoscaling,
    PoolStats,
    StateStat,
)

routes = web.RouteTableDef()
AUTOSCALING = web.AppKey("autoscaling", Autoscaling)

MAX_WORKFLOWS = 256
_POOL = "/api/v1/hewer/tenants/{tenant}/worker-pools/{pool}"


def _service(request: web.Request) -> Autoscaling:
    found = request.app.get(AUTOSCALING)
    if found is None:  # an app built without it (some tests)
        raise ApiError(503, "autoscaling statistics are not available on this server")
    return found


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def state_body(stat: StateStat) -> dict[str, Any]:
    body: dict[str, Any] = {"total": stat.total}
    if stat.queues is not None:
        body["queues"] = dict(stat.queues)
    body["concurrency"] = list(stat.concurrency)
    if stat.oldest is not None:
        body["oldest"] = _iso(stat.oldest)
    return body


@routes.get("/api/v1/tenants/{tenant}/task-stats")
async def task_stats(request: web.Request) -> web.Response:
    stats = await _service(request).task_stats(tenant_id(request))
    body: dict[str, Any] = {}
    for name, stat in stats.items():
        entry: dict[str, Any] = {}
        if stat.queued is not None:
            entry["queued"] = state_body(stat.queued)
        if stat.running is not None:
            entry["running"] = state_body(stat.running)
        body[name] = entry
    return respond(body)


def _pool_args(request: web.Request) -> tuple[str, list[str]]:
    pool = request.match_info["pool"].strip()
    if not pool or len(pool) > 253:
        raise BadRequest("pool: expected a WorkerPool name of 1 to 253 characters")
    workflows = Query(request.query).many("workflow") or []
    if not workflows:
        raise BadRequest(
            "workflow: name at least one workflow the pool serves (a pool that serves "
            "nothing has no queue to scale on)"
        )
    if len(workflows) > MAX_WORKFLOWS:
        raise BadRequest(f"workflow: at most {MAX_WORKFLOWS} names")
    return pool, list(dict.fromkeys(workflows))


def pool_body(stats: PoolStats) -> dict[str, Any]:
    return {
        "pool": stats.pool,
        "workflows": stats.workflows,
        "unknownWorkflows": stats.unknown_workflows,
        "queued": stats.queued,
        "running": stats.running,
        "oldestQueuedAgeSeconds": stats.oldest_queued_age_seconds,
        "busyWorkers": stats.busy_workers,
        "workers": [
            {
                "id": w.id,
                "name": w.name,
                "pod": w.pod,
                "paused": w.paused,
                "running": w.running,
                "busy": w.busy,
            }
            for w in stats.workers
        ],
    }


@routes.get(_POOL + "/stats")
async def pool_stats(request: web.Request) -> web.Response:
    pool, workflows = _pool_args(request)
    stats = await _service(request).pool_stats(tenant_id(request), pool=pool, workflows=workflows)
    return respond(pool_body(stats))


@routes.get(_POOL + "/wait")
async def pool_wait(request: web.Request) -> web.Response:
    pool, workflows = _pool_args(request)
    q = Query(request.query)
    known = q.integer("queued", default=0)
    timeout = q.integer("timeoutSeconds", default=25, maximum=int(MAX_WAIT_SECONDS))
    stats = await _service(request).wait_for_work(
        tenant_id(request), pool=pool, workflows=workflows, known_queued=known, wait_seconds=timeout
    )
    return respond(pool_body(stats))
