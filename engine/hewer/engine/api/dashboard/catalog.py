"""What a tenant has declared: workflows (versions, triggers, policies in effect, pause),
crons and scheduled runs (create, delete, trigger now), events and filters, rate limits."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from hewer.engine.api.dashboard.render import STATE, NotFound, page, redirect, render
from hewer.engine.api.dashboard.session import Viewer
from hewer.engine.services.scheduling import Scheduling, SchedulingError

__all__ = ["SCHEDULING", "routes"]

routes = web.RouteTableDef()
SCHEDULING = web.AppKey("dashboard_scheduling", Scheduling)
# how long a paused workflow's queued runs wait before they are cancelled, as offered
QUEUE_TTL_CHOICES = {
    "3600": "1 hour",
    "86400": "24 hours",
    "604800": "7 days",
    "0": "no time: cancel them",
}
DEFAULT_QUEUE_TTL = "86400"


def _id(request: web.Request, name: str, what: str) -> str:
    try:
        return str(uuid.UUID(request.match_info[name]))
    except ValueError:
        raise NotFound(f"There is no {what} with that id.") from None


@routes.get("/workflows")
@page
async def workflows_page(request: web.Request, viewer: Viewer) -> web.Response:
    workflows = await request.app[STATE].dashboard.workflows(viewer.tenant.id)
    return render(request, "workflows.html", viewer=viewer, workflows=workflows)


@routes.get("/workflows/{workflow}")
@page
async def workflow_page(request: web.Request, viewer: Viewer) -> web.Response:
    workflow_id = _id(request, "workflow", "workflow")
    workflow = await request.app[STATE].dashboard.workflow(viewer.tenant.id, workflow_id)
    if workflow is None:
        raise NotFound("There is no workflow with that id in this tenant.")
    return render(
        request,
        "workflow.html",
        viewer=viewer,
        workflow=workflow,
        ttl_choices=QUEUE_TTL_CHOICES,
        default_ttl=DEFAULT_QUEUE_TTL,
    )


@routes.post("/workflows/{workflow}/pause")
@page
async def pause_workflow(request: web.Request, viewer: Viewer) -> web.Response:
    return await _set_paused(request, viewer, paused=True)


@routes.post("/workflows/{workflow}/unpause")
@page
async def unpause_workflow(request: web.Request, viewer: Viewer) -> web.Response:
    return await _set_paused(request, viewer, paused=False)


async def _set_paused(request: web.Request, viewer: Viewer, *, paused: bool) -> web.Response:
    workflow_id = _id(request, "workflow", "workflow")
    service = request.app[SCHEDULING]
    back = _back(request, "/workflows")
    ttl = str((await request.post()).get("queue_ttl", DEFAULT_QUEUE_TTL))
    if ttl not in QUEUE_TTL_CHOICES:
        return redirect(request, back, message="Choose how long queued runs may wait.")
    try:
        if paused:
            # crons and scheduled runs still queue, and wait like the rest
            await service.pause(
                tenant_id=viewer.tenant.id,
                workflow_id=workflow_id,
                queue_ttl_seconds=float(ttl),
                cron_behavior="QUEUE",
                scheduled_behavior="QUEUE",
            )
        else:
            await service.unpause(tenant_id=viewer.tenant.id, workflow_id=workflow_id)
    except SchedulingError as exc:
        return redirect(request, back, message=str(exc))
    return redirect(request, back, message="Workflow paused." if paused else "Workflow resumed.")


def _back(request: web.Request, default: str) -> str:
    """Where a form asked to return to: a path of this dashboard only."""
    wanted = request.query.get("back", "")
    return wanted if wanted.startswith("/") and not wanted.startswith("//") else default


# -- crons and scheduled runs ------------------------------------------------------------------


@routes.get("/crons")
@page
async def crons_page(request: web.Request, viewer: Viewer) -> web.Response:
    dashboard = request.app[STATE].dashboard
    tenant = viewer.tenant.id
    return render(
        request,
        "crons.html",
        viewer=viewer,
        crons=await dashboard.crons(tenant),
        scheduled=await dashboard.scheduled(tenant),
        workflows=await dashboard.workflow_names(tenant),
    )


def _object(text: str, what: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise SchedulingError(f"{what} must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise SchedulingError(f"{what} must be a JSON object")
    return value


@routes.post("/crons")
@page
async def create_cron(request: web.Request, viewer: Viewer) -> web.Response:
    form = await request.post()
    try:
        await request.app[SCHEDULING].create_cron(
            tenant_id=viewer.tenant.id,
            workflow_name=str(form.get("workflow", "")),
            name=str(form.get("name", "")).strip(),
            expression=str(form.get("expression", "")).strip(),
            input=_object(str(form.get("input", "")), "input"),
            metadata=_object(str(form.get("metadata", "")), "metadata"),
            priority=None,
        )
    except SchedulingError as exc:
        return redirect(request, "/crons", message=f"Cron not created: {exc}")
    return redirect(request, "/crons", message="Cron created.")


@routes.post("/scheduled")
@page
async def create_scheduled(request: web.Request, viewer: Viewer) -> web.Response:
    form = await request.post()
    try:
        raw = str(form.get("trigger_at", ""))
        try:
            at = datetime.fromisoformat(raw)
        except ValueError:
            raise SchedulingError(
                "time: expected a date and time such as 2025-01-31T13:45"
            ) from None
        await request.app[SCHEDULING].schedule(
            tenant_id=viewer.tenant.id,
            workflow_name=str(form.get("workflow", "")),
            trigger_at=[at if at.tzinfo else at.replace(tzinfo=UTC)],
            input=_object(str(form.get("input", "")), "input"),
            metadata=_object(str(form.get("metadata", "")), "metadata"),
            priority=None,
        )
    except SchedulingError as exc:
        return redirect(request, "/crons", message=f"Run not scheduled: {exc}")
    return redirect(request, "/crons", message="Run scheduled.")


@routes.post("/crons/{cron}/delete")
@page
async def delete_cron(request: web.Request, viewer: Viewer) -> web.Response:
    try:
        await request.app[SCHEDULING].delete_cron(
            tenant_id=viewer.tenant.id, cron_id=_id(request, "cron", "cron")
        )
    except SchedulingError as exc:
        return redirect(request, "/crons", message=str(exc))
    return redirect(request, "/crons", message="Cron deleted.")


@routes.post("/crons/{cron}/trigger")
@page
async def trigger_cron(request: web.Request, viewer: Viewer) -> web.Response:
    try:
        run_id = await request.app[SCHEDULING].trigger_cron(
            tenant_id=viewer.tenant.id, cron_id=_id(request, "cron", "cron")
        )
    except SchedulingError as exc:
        return redirect(request, "/crons", message=str(exc))
    return redirect(request, f"/runs/{run_id}", message="Cron triggered now.")


@routes.post("/scheduled/{scheduled}/delete")
@page
async def delete_scheduled(request: web.Request, viewer: Viewer) -> web.Response:
    deleted = await request.app[SCHEDULING].delete_scheduled(
        tenant_id=viewer.tenant.id, ids=[_id(request, "scheduled", "scheduled run")]
    )
    message = "Scheduled run deleted." if deleted else "That scheduled run is gone already."
    return redirect(request, "/crons", message=message)


@routes.post("/scheduled/{scheduled}/trigger")
@page
async def trigger_scheduled(request: web.Request, viewer: Viewer) -> web.Response:
    try:
        run_id = await request.app[SCHEDULING].trigger_scheduled(
            tenant_id=viewer.tenant.id, scheduled_id=_id(request, "scheduled", "scheduled run")
        )
    except SchedulingError as exc:
        return redirect(request, "/crons", message=str(exc))
    return redirect(request, f"/runs/{run_id}", message="Scheduled run triggered now.")


# -- events, filters, rate limits --------------------------------------------------------------


@routes.get("/events")
@page
async def events_page(request: web.Request, viewer: Viewer) -> web.Response:
    dashboard = request.app[STATE].dashboard
    return render(
        request,
        "events.html",
        viewer=viewer,
        events=await dashboard.events(viewer.tenant.id),
        filters=await dashboard.filters(viewer.tenant.id),
    )


@routes.get("/rate-limits")
@page
async def rate_limits_page(request: web.Request, viewer: Viewer) -> web.Response:
    limits = await request.app[STATE].dashboard.rate_limits(viewer.tenant.id)
    return render(request, "rate_limits.html", viewer=viewer, limits=limits)
