"""WorkerPool reports from the Hewer operator, shown on the dashboard's Worker pools page.

* ``PUT /api/v1/hewer/tenants/{tenant}/worker-pools/{pool}/report``: the pool's state now
  (``desiredReplicas``, ``replicas``, optional ``readyReplicas``, ``queued``, ``running``,
  ``busyWorkers``, ``autoscaling``, ``minReplicas``, ``maxReplicas``, ``workflows``,
  ``reason``) and, when the report comes with one, the scale ``decision`` (``up``, ``down``
  or ``hold``). ``namespace`` (required) and the path's pool name identify the pool.
* ``DELETE .../report?namespace=NS``: the pool is gone; its reports and history go too.

Authenticated like the rest of the API; the ``{tenant}`` segment must be the token's tenant.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from hewer.engine.api.rest.context import respond, tenant_id
from hewer.engine.api.rest.errors import ApiError, BadRequest, NotFound
from hewer.engine.api.rest.params import read_json
from hewer.engine.services.dashboard import Dashboard, PoolReport

__all__ = ["DASHBOARD", "routes"]

routes = web.RouteTableDef()
DASHBOARD = web.AppKey("pool_reports_dashboard", Dashboard)

_PATH = "/api/v1/hewer/tenants/{tenant}/worker-pools/{pool}/report"
_DECISIONS = ("up", "down", "hold")
_MAX_NAME = 253
_MAX_REASON = 1000
_MAX_REPLICAS = 1_000_000


def _service(request: web.Request) -> Dashboard:
    found = request.app.get(DASHBOARD)
    if found is None:  # an app built without it (some tests)
        raise ApiError(503, "WorkerPool reports are not available on this server")
    return found


def _name(value: Any, what: str) -> str:
    text = str(value or "").strip()
    if not text or len(text) > _MAX_NAME or "/" in text:
        raise BadRequest(f"{what}: expected a name of 1 to {_MAX_NAME} characters without '/'")
    return text


def _count(body: dict[str, Any], key: str, *, required: bool = False) -> int | None:
    value = body.get(key)
    if value is None:
        if required:
            raise BadRequest(f"{key} is required")
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_REPLICAS:
        raise BadRequest(f"{key}: expected a whole number from 0 to {_MAX_REPLICAS}")
    return value


def _pool_key(request: web.Request, namespace: Any) -> str:
    return f"{_name(namespace, 'namespace')}/{_name(request.match_info['pool'], 'pool')}"


@routes.put(_PATH)
async def put_report(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("body must be an object {namespace, desiredReplicas, replicas, ...}")
    pool = _pool_key(request, body.get("namespace"))
    workflows = body.get("workflows") or []
    if not isinstance(workflows, list) or not all(isinstance(w, str) for w in workflows):
        raise BadRequest("workflows: expected a list of workflow names")
    decision = body.get("decision")
    if decision is not None and decision not in _DECISIONS:
        raise BadRequest(f"decision: expected one of {', '.join(_DECISIONS)}")
    reason = body.get("reason") or ""
    if not isinstance(reason, str):
        raise BadRequest("reason: expected text")
    report = PoolReport(
        pool=pool,
        workflows=[w[:_MAX_NAME] for w in workflows[:256]],
        autoscaling=bool(body.get("autoscaling", False)),
        min_replicas=_count(body, "minReplicas"),
        max_replicas=_count(body, "maxReplicas"),
        desired_replicas=_count(body, "desiredReplicas", required=True) or 0,
        current_replicas=_count(body, "replicas", required=True) or 0,
        ready_replicas=_count(body, "readyReplicas"),
        queued=_count(body, "queued"),
        running=_count(body, "running"),
        busy_workers=_count(body, "busyWorkers"),
        reason=reason[:_MAX_REASON],
        decision=decision,
    )
    await _service(request).put_pool_report(tenant_id(request), report)
    return respond({"pool": pool, "recorded": True})


@routes.delete(_PATH)
async def delete_report(request: web.Request) -> web.Response:
    pool = _pool_key(request, request.query.get("namespace"))
    if not await _service(request).delete_pool_report(tenant_id(request), pool):
        raise NotFound(f"no report of pool {pool}")
    return respond({"pool": pool, "deleted": True})
