"""The REST API the Hatchet SDKs call (``/api/v1/...``), as an aiohttp application.

Layout: ``runs`` (workflow-run listing, details, trigger), ``tasks`` (task details, logs,
cancel and replay), ``workflows`` (definitions and the tenant), ``workers``, ``events`` and
``traces`` (a run's OpenTelemetry trace).
Reads go through :class:`Reads`, tenant settings through :class:`TenantObjects`; run state
changes go through :class:`RunControl`.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from hewer.engine.api.rest import (
    cel,
    durable,
    event_push,
    events,
    filters,
    hewer_ops,
    observability,
    pool_reports,
    runs,
    scheduling,
    task_stats,
    tasks,
    webhooks,
    workers,
    workflows,
)
from hewer.engine.api.rest import traces as traces_api
from hewer.engine.api.rest.context import (
    AUTH,
    CONTROL,
    EVENTS,
    IDENTITY,
    MAX_PAYLOAD,
    OBJECTS,
    READS,
    SECRETS,
    check_path_tenant,
)
from hewer.engine.api.rest.errors import BadRequest, Handler, Unauthorized, error_middleware
from hewer.engine.api.rest.protocols import RunControl
from hewer.engine.services.auth import Authenticator, AuthError
from hewer.engine.services.autoscaling import Autoscaling
from hewer.engine.services.dashboard import Dashboard
from hewer.engine.services.definitions import Definitions
from hewer.engine.services.events import Events
from hewer.engine.services.reads import Reads
from hewer.engine.services.scheduling import Scheduling
from hewer.engine.services.secrets import SecretBox
from hewer.engine.services.tenant_objects import TenantObjects
from hewer.engine.services.traces import Traces

# Every REST route module, in the order build_app adds their routes (tests/e2e/test_fuzz.py
# sends malformed requests to all of them)
ROUTE_MODULES = (
    runs,
    tasks,
    durable,
    workflows,
    workers,
    events,
    event_push,
    filters,
    webhooks,
    cel,
    hewer_ops,
    scheduling,
    observability,
    task_stats,
    traces_api,
    pool_reports,
)
# Probes answer without a token: kubelets and load balancers have none.
_PUBLIC_PATHS = frozenset({"/api/ready", "/api/live", "/metrics"})
# room above HEWER_MAX_PAYLOAD_BYTES for the rest of a request body (names, metadata)
_BODY_ENVELOPE_BYTES = 64 * 1024
DEFAULT_MAX_PAYLOAD_BYTES = 4 * 1024 * 1024


@web.middleware
async def nul_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """PostgreSQL cannot store NUL characters: refuse them in the path and query up front."""
    if "\x00" in request.path or any(
        "\x00" in key or "\x00" in value for key, value in request.query.items()
    ):
        raise BadRequest("the path and query must not contain NUL characters (\\u0000)")
    return await handler(request)


class _BadHttpMessageFilter(logging.Filter):
    """aiohttp logs a request it cannot parse (request line or headers too long, bad
    framing) as an ERROR with a traceback, after answering 400: one warning line is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = "bad HTTP request answered 400: %s", (exc.message,)
            record.exc_info = record.exc_text = None
        return True


def quiet_bad_http_messages() -> None:
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _BadHttpMessageFilter) for f in server_log.filters):
        server_log.addFilter(_BadHttpMessageFilter())


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in _PUBLIC_PATHS or request.match_info.http_exception is not None:
        # unknown paths and wrong methods get their 404/405 without a token check
        return await handler(request)
    if not request.path.startswith("/api/"):
        # the web dashboard's pages: each checks the dashboard session (api/dashboard)
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
    reads: Reads,
    objects: TenantObjects,
    control: RunControl,
    auth: Authenticator,
    definitions: Definitions,
    events_service: Events | None = None,
    secret_box: SecretBox | None = None,
    scheduling_service: Scheduling | None = None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    autoscaling: Autoscaling | None = None,
    traces: Traces | None = None,
    dashboard: Dashboard | None = None,
) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware, nul_middleware, auth_middleware],
        client_max_size=max_payload_bytes + _BODY_ENVELOPE_BYTES,
    )
    app[MAX_PAYLOAD] = max_payload_bytes
    quiet_bad_http_messages()
    app[READS] = reads
    app[OBJECTS] = objects
    app[CONTROL] = control
    app[AUTH] = auth
    if events_service is not None:
        app[EVENTS] = events_service
    if secret_box is not None:
        app[SECRETS] = secret_box
    app[hewer_ops.DEFINITIONS] = definitions
    app.router.add_get("/api/ready", _ok)
    app.router.add_get("/api/live", _ok)
    if scheduling_service is not None:
        app[scheduling.SCHEDULING] = scheduling_service
    if autoscaling is not None:
        app[task_stats.AUTOSCALING] = autoscaling
    if traces is not None:
        app[traces_api.TRACES] = traces
    if dashboard is not None:
        app[pool_reports.DASHBOARD] = dashboard
    for module in ROUTE_MODULES:
        app.router.add_routes(module.routes)
    return app
