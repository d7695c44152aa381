"""The REST API the Hatchet SDKs call (``/api/v1/...``), as an aiohttp application.

Layout: ``runs`` (workflow-run listing, details, trigger), ``tasks`` (task details, logs,
cancel and replay), ``workflows`` (definitions and the tenant), ``workers`` and ``events``.
Reads go to the repository; state changes go through :class:`RunControl`.
"""

from __future__ import annotations

from aiohttp import web

from hewer.engine.api.rest import (
    cel,
    events,
    filters,
    hewer_ops,
    observability,
    runs,
    scheduling,
    task_stats,
    tasks,
    webhooks,
    workers,
    workflows,
)
from hewer.engine.api.rest.context import (
    AUTH,
    CONTROL,
    EVENTS,
    IDENTITY,
    REPO,
    SECRETS,
    check_path_tenant,
)
from hewer.engine.api.rest.errors import Handler, Unauthorized, error_middleware
from hewer.engine.api.rest.protocols import RunControl
from hewer.engine.db.repository import Repository
from hewer.engine.services.auth import Authenticator, AuthError
from hewer.engine.services.autoscaling import Autoscaling
from hewer.engine.services.definitions import Definitions
from hewer.engine.services.events import Events
from hewer.engine.services.scheduling import Scheduling
from hewer.engine.services.secrets import SecretBox

# Probes answer without a token: kubelets and load balancers have none.
_PUBLIC_PATHS = frozenset({"/api/ready", "/api/live", "/metrics"})
_MAX_BODY_BYTES = 8 * 1024 * 1024


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in _PUBLIC_PATHS or request.match_info.http_exception is not None:
        # unknown paths and wrong methods get their 404/405 without a token check
        return await handler(request)
    if webhooks.is_receive(request):
        # a webhook sender has no token: the webhook's own auth is checked by the handler
        return await handler(request)
    try:
        who = await request.app[AUTH].authenticate(request.headers.get("Authorization"))
    except AuthError as exc:
        raise Unauthorized(str(exc)) from None
    check_path_tenant(request, who)
    request[IDENTITY] = who
    return await handler(request)


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def build_app(
    *,
    repo: Repository,
    control: RunControl,
    auth: Authenticator,
    definitions: Definitions | None = None,
    events_service: Events | None = None,
    secret_box: SecretBox | None = None,
    scheduling_service: Scheduling | None = None,
    autoscaling: Autoscaling | None = None,
) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware, auth_middleware], client_max_size=_MAX_BODY_BYTES
    )
    app[REPO] = repo
    app[CONTROL] = control
    app[AUTH] = auth
    if events_service is not None:
        app[EVENTS] = events_service
    if secret_box is not None:
        app[SECRETS] = secret_box
    app[hewer_ops.DEFINITIONS] = definitions if definitions is not None else Definitions(repo)
    app.router.add_get("/api/ready", _ok)
    app.router.add_get("/api/live", _ok)
    for module in (runs, tasks, workflows, workers, events, filters, webhooks, cel):
        app.router.add_routes(module.routes)
    app.router.add_routes(hewer_ops.routes)
    if scheduling_service is not None:
        app[scheduling.SCHEDULING] = scheduling_service
    app.router.add_routes(scheduling.routes)
    app.router.add_routes(observability.routes)
    app[task_stats.AUTOSCALING] = autoscaling if autoscaling is not None else Autoscaling(repo=repo)
    app.router.add_routes(task_stats.routes)
    return app
