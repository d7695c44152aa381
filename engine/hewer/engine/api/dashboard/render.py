"""Rendering: the Jinja2 environment (autoescape on for every template), the filters the
templates use, the security headers every page carries, and the ``page`` wrapper that each
handler goes through (session, CSRF on POSTs, error pages).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from hewer.engine.api.dashboard.session import (
    DashboardState,
    Forbidden,
    Viewer,
    check_csrf,
    csrf_token,
    remember_csrf_key,
    resolve_viewer,
)
from hewer.engine.services.outage import is_database_unavailable, outage_log

__all__ = ["STATE", "NotFound", "flash", "page", "redirect", "render"]

log = logging.getLogger(__name__)

STATE = web.AppKey("dashboard", DashboardState)
FLASH_COOKIE = "hewer_flash"
# No inline script or style anywhere: a value that slipped past escaping still could not run.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
# what a page shows for a value it does not have
_NONE = "\N{EN DASH}"
PageHandler = Callable[[web.Request, Viewer], Awaitable[web.StreamResponse]]


class NotFound(Exception):
    """Nothing of that id in the current tenant (the page says so, with a 404)."""


def _dt(value: datetime | None) -> str:
    if value is None:
        return _NONE
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _iso(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat()


def _seconds(value: float | None) -> str:
    if value is None:
        return _NONE
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None:
        return _NONE
    return _seconds(((end or datetime.now(UTC)) - start).total_seconds())


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def _asset_version() -> str:
    """A digest of the static files, so a browser fetches them again after an upgrade."""
    digest = hashlib.sha256()
    for path in sorted((Path(__file__).parent / "static").iterdir()):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


_ASSET_VERSION = _asset_version()


def _asset(name: str) -> str:
    return f"/static/{name}?v={_ASSET_VERSION}"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("hewer.engine.api.dashboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        dt=_dt,
        iso=_iso,
        seconds=_seconds,
        duration=_duration,
        pretty=_pretty,
        # ids begin with their creation time (core/ids.py): the random tail tells them apart
        short=lambda s: "…" + str(s)[-8:],
    )
    env.globals["asset"] = _asset
    return env


ENV = _environment()


def _secure_headers(response: web.StreamResponse) -> None:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"


def render(
    request: web.Request,
    template: str,
    *,
    viewer: Viewer | None,
    status: int = 200,
    **context: Any,
) -> web.Response:
    flash_text = _read_flash(request)
    html = ENV.get_template(template).render(
        viewer=viewer,
        csrf=viewer.csrf if viewer is not None else csrf_token(request),
        path=request.path,
        flash=flash_text,
        now=datetime.now(UTC),
        **context,
    )
    response = web.Response(text=html, status=status, content_type="text/html")
    _secure_headers(response)
    remember_csrf_key(request, response)
    if flash_text is not None:
        response.del_cookie(FLASH_COOKIE, path="/")
    if len(html) > 4096:
        response.enable_compression()
    return response


def redirect(request: web.Request, location: str, *, message: str | None = None) -> web.Response:
    """303 to a page of this dashboard, with a one-time message shown there."""
    if not location.startswith("/") or location.startswith("//"):
        location = "/"
    response = web.Response(status=303, headers={"Location": location})
    _secure_headers(response)
    remember_csrf_key(request, response)
    if message:
        flash(request, response, message)
    return response


def flash(request: web.Request, response: web.StreamResponse, message: str) -> None:
    encoded = base64.urlsafe_b64encode(message[:300].encode()).decode()
    response.set_cookie(
        FLASH_COOKIE, encoded, httponly=True, samesite="Strict", path="/", secure=request.secure
    )


def _read_flash(request: web.Request) -> str | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        return base64.urlsafe_b64decode(raw.encode()).decode()
    except ValueError:
        return None


def page(handler: PageHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A dashboard handler: the viewer must be logged in (else the login page), a POST must
    carry the form's CSRF token, and failures become pages, never tracebacks."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        viewer: Viewer | None = None
        try:
            viewer = await resolve_viewer(request, state)
            if viewer is None:
                if request.method != "GET":
                    return redirect(request, "/login", message="Log in first.")
                return redirect(request, "/login")
            if request.method == "POST":
                await check_csrf(request)
            return await handler(request, viewer)
        except Forbidden as exc:
            return render(request, "error.html", viewer=None, status=403, message=str(exc))
        except NotFound as exc:
            return render(request, "error.html", viewer=viewer, status=404, message=str(exc))
        except web.HTTPException:
            raise
        except Exception as exc:
            if is_database_unavailable(exc):
                outage_log("dashboard").failed(exc)
                message = "The engine's database is unavailable; this page retries by itself."
                return render(request, "error.html", viewer=None, status=503, message=message)
            log.exception("dashboard error in %s %s", request.method, request.path)
            return render(request, "error.html", viewer=None, status=500, message="Internal error.")

    return wrapped
