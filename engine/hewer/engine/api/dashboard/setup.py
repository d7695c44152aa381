"""The dashboard's wiring: login, logout and tenant switch, static files, and
:func:`add_dashboard`, which mounts every page on the engine's HTTP application at ``/``.

The pages live outside ``/api/``, so the REST API's bearer-token middleware lets them
through and each page checks the dashboard session instead (``render.page``).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from hewer.engine.api.dashboard import catalog, fleet, runs
from hewer.engine.api.dashboard.render import STATE, redirect, render
from hewer.engine.api.dashboard.session import (
    AUTH_MODES,
    DashboardState,
    Forbidden,
    add_token,
    check_csrf,
    clear_session,
    resolve_viewer,
    set_tenant,
)
from hewer.engine.api.rest.protocols import RunControl
from hewer.engine.services.auth import Authenticator, AuthError
from hewer.engine.services.dashboard import Dashboard
from hewer.engine.services.scheduling import Scheduling
from hewer.engine.services.subscriptions import EventWatchers

__all__ = ["AUTH_MODES", "add_dashboard"]

routes = web.RouteTableDef()
STATIC_DIR = Path(__file__).parent / "static"


@routes.get("/")
async def home(request: web.Request) -> web.Response:
    return redirect(request, "/runs")


@routes.get("/ui")
@routes.get("/dashboard")
async def old_paths(request: web.Request) -> web.Response:
    return redirect(request, "/runs")


@routes.get("/login")
async def login_page(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.auth_mode == "none":
        return redirect(request, "/runs")
    viewer = await resolve_viewer(request, state)
    return render(request, "login.html", viewer=viewer, error=None)


@routes.post("/login")
async def login(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        await check_csrf(request)
    except Forbidden as exc:
        return render(request, "login.html", viewer=None, error=str(exc), status=403)
    form = await request.post()
    response = redirect(request, "/runs")
    try:
        await add_token(request, response, state, str(form.get("token", "")))
    except AuthError as exc:
        return render(request, "login.html", viewer=None, error=str(exc), status=401)
    except ValueError as exc:
        return render(request, "login.html", viewer=None, error=str(exc), status=400)
    return response


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    try:
        await check_csrf(request)
    except Forbidden as exc:
        return render(request, "error.html", viewer=None, status=403, message=str(exc))
    response = redirect(request, "/login", message="Logged out.")
    clear_session(response)
    return response


@routes.post("/tenant")
async def switch_tenant(request: web.Request) -> web.Response:
    state = request.app[STATE]
    viewer = await resolve_viewer(request, state)
    if viewer is None:
        return redirect(request, "/login")
    try:
        await check_csrf(request)
    except Forbidden as exc:
        return render(request, "error.html", viewer=None, status=403, message=str(exc))
    wanted = str((await request.post()).get("tenant", ""))
    chosen = next((t for t in viewer.tenants if t.id == wanted), None)
    if chosen is None:
        # a tenant none of the session's tokens grants
        return render(
            request,
            "error.html",
            viewer=viewer,
            status=403,
            message="This session has no token for that tenant.",
        )
    response = redirect(request, "/runs", message=f"Tenant {chosen.name}.")
    set_tenant(request, response, chosen.id)
    return response


def add_dashboard(
    app: web.Application,
    *,
    dashboard: Dashboard,
    auth: Authenticator,
    auth_mode: str,
    control: RunControl,
    scheduling: Scheduling,
    run_events: EventWatchers,
    heartbeat_timeout: float,
) -> None:
    """Serve the dashboard from ``app`` (the engine's HTTP application)."""
    if auth_mode not in AUTH_MODES:
        raise ValueError(f"dashboard auth must be one of {AUTH_MODES}, got {auth_mode!r}")
    app[STATE] = DashboardState(dashboard=dashboard, auth=auth, auth_mode=auth_mode)
    app[runs.CONTROL] = control
    app[runs.RUN_EVENTS] = run_events
    app[catalog.SCHEDULING] = scheduling
    app[fleet.HEARTBEAT_TIMEOUT] = heartbeat_timeout
    for module_routes in (routes, runs.routes, catalog.routes, fleet.routes):
        app.router.add_routes(module_routes)
    app.router.add_static("/static/", STATIC_DIR)
