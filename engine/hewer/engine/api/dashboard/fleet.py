"""The fleet: workers (slots, labels, heartbeat, pause), queues (by task and concurrency
key, oldest queued, the last hour as a chart) and WorkerPools as the operator reports them
(replicas and scale decisions over time)."""

from __future__ import annotations

import uuid

from aiohttp import web

from hewer.engine.api.dashboard.graphs import line_chart
from hewer.engine.api.dashboard.render import STATE, NotFound, page, redirect, render
from hewer.engine.api.dashboard.runs import CONTROL
from hewer.engine.api.dashboard.session import Viewer

__all__ = ["HEARTBEAT_TIMEOUT", "routes"]

routes = web.RouteTableDef()
HEARTBEAT_TIMEOUT = web.AppKey("dashboard_heartbeat_timeout", float)


@routes.get("/workers")
@page
async def workers_page(request: web.Request, viewer: Viewer) -> web.Response:
    workers = await request.app[STATE].dashboard.workers(
        viewer.tenant.id, heartbeat_timeout=request.app[HEARTBEAT_TIMEOUT]
    )
    return render(request, "workers.html", viewer=viewer, workers=workers)


async def _set_paused(request: web.Request, viewer: Viewer, *, paused: bool) -> web.Response:
    try:
        worker_id = str(uuid.UUID(request.match_info["worker"]))
    except ValueError:
        raise NotFound("There is no worker with that id.") from None
    found = await request.app[CONTROL].set_worker_paused(
        tenant_id=viewer.tenant.id, worker_id=worker_id, paused=paused
    )
    if not found:
        raise NotFound("There is no worker with that id in this tenant.")
    return redirect(request, "/workers", message="Worker paused." if paused else "Worker resumed.")


@routes.post("/workers/{worker}/pause")
@page
async def pause_worker(request: web.Request, viewer: Viewer) -> web.Response:
    return await _set_paused(request, viewer, paused=True)


@routes.post("/workers/{worker}/resume")
@page
async def resume_worker(request: web.Request, viewer: Viewer) -> web.Response:
    return await _set_paused(request, viewer, paused=False)


@routes.get("/queues")
@page
async def queues_page(request: web.Request, viewer: Viewer) -> web.Response:
    queues = await request.app[STATE].dashboard.queues(viewer.tenant.id)
    chart = line_chart(
        [p.at for p in queues.history],
        [
            ("queued", "queued", [p.queued for p in queues.history]),
            ("running", "running", [p.running for p in queues.history]),
        ],
    )
    return render(request, "queues.html", viewer=viewer, queues=queues, chart=chart)


@routes.get("/worker-pools")
@page
async def pools_page(request: web.Request, viewer: Viewer) -> web.Response:
    pools = await request.app[STATE].dashboard.pools(viewer.tenant.id)
    charts = {
        p.pool: line_chart(
            [x.at for x in p.points],
            [
                ("desired", "desired", [x.desired for x in p.points]),
                ("current", "current", [x.current for x in p.points]),
            ],
            height=140,
            step=True,
        )
        for p in pools
        if p.points
    }
    return render(request, "pools.html", viewer=viewer, pools=pools, charts=charts)
