"""Who is looking: the dashboard's login, tenant switch and CSRF protection.

A browser logs in with an API token, the same kind the REST API takes. The token is kept in
an HttpOnly, SameSite=Strict cookie and checked again on every request (so a revoked or
expired token stops working at once, as on the REST API); pasting a second tenant's token
adds it to the session, and the page header then offers a switch between the tenants the
session's tokens grant. With ``HEWER_DASHBOARD_AUTH=none`` (a trusted local setup) there is
no login and every tenant is offered.

Every POST carries a CSRF token: an HMAC of the session cookie keyed by a random per-browser
cookie, neither of which a page on another origin can read; a POST whose ``Origin`` is
another site is refused as well.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from aiohttp import web

from hewer.engine.services.auth import Authenticator, AuthError
from hewer.engine.services.dashboard import Dashboard, Tenant

__all__ = [
    "AUTH_MODES",
    "DashboardState",
    "Forbidden",
    "Viewer",
    "add_token",
    "check_csrf",
    "clear_session",
    "csrf_token",
    "resolve_viewer",
    "set_tenant",
]

SESSION_COOKIE = "hewer_session"
TENANT_COOKIE = "hewer_tenant"
CSRF_COOKIE = "hewer_csrf"
AUTH_MODES = ("token", "none")
# tokens are JWTs (base64url and dots): "~" cannot occur in one
_SEPARATOR = "~"
# browsers keep cookies up to 4 KiB; a session holds a few tokens at most
MAX_SESSION_BYTES = 3800
SESSION_SECONDS = 7 * 24 * 3600
_NEW_CSRF = web.RequestKey("dashboard_new_csrf", str)


class Forbidden(Exception):
    """A request the dashboard refuses (bad CSRF token, foreign origin)."""


@dataclass(frozen=True, slots=True)
class DashboardState:
    dashboard: Dashboard
    auth: Authenticator
    auth_mode: str


@dataclass(frozen=True, slots=True)
class Viewer:
    tenant: Tenant
    tenants: list[Tenant]
    csrf: str
    auth_none: bool


def _cookie_options(request: web.Request) -> dict[str, object]:
    return {"httponly": True, "samesite": "Strict", "path": "/", "secure": request.secure}


def _csrf_key(request: web.Request) -> str:
    """The browser's random CSRF key; a new one (set on the response) if it has none."""
    existing = request.cookies.get(CSRF_COOKIE) or request.get(_NEW_CSRF)
    if existing:
        return str(existing)
    fresh = secrets.token_urlsafe(32)
    request[_NEW_CSRF] = fresh
    return fresh


def csrf_token(request: web.Request) -> str:
    key = _csrf_key(request)
    session = request.cookies.get(SESSION_COOKIE, "")
    return hmac.new(key.encode(), f"csrf:{session}".encode(), hashlib.sha256).hexdigest()


def remember_csrf_key(request: web.Request, response: web.StreamResponse) -> None:
    """Set the CSRF key cookie if this request made one."""
    fresh = request.get(_NEW_CSRF)
    if fresh:
        response.set_cookie(CSRF_COOKIE, fresh, **_cookie_options(request))  # type: ignore[arg-type]


async def check_csrf(request: web.Request) -> None:
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        host = origin.split("://", 1)[-1]
        if host != request.host:
            raise Forbidden(f"a form from {origin} cannot act on this dashboard")
    form = await request.post()
    sent = str(form.get("csrf", ""))
    if not request.cookies.get(CSRF_COOKIE) or not hmac.compare_digest(sent, csrf_token(request)):
        raise Forbidden("the form has expired or did not come from this dashboard; reload it")


def _tokens(request: web.Request) -> list[str]:
    raw = request.cookies.get(SESSION_COOKIE, "")
    return [t for t in raw.split(_SEPARATOR) if t]


async def _tenant_ids(auth: Authenticator, tokens: list[str]) -> list[str]:
    ids: list[str] = []
    for token in tokens:
        try:
            who = await auth.authenticate(f"Bearer {token}")
        except AuthError:
            continue  # expired or revoked: that tenant is no longer offered
        if who.tenant_id not in ids:
            ids.append(who.tenant_id)
    return ids


async def resolve_viewer(request: web.Request, state: DashboardState) -> Viewer | None:
    """The viewer and current tenant, or None when the browser must log in."""
    if state.auth_mode == "none":
        tenants = await state.dashboard.tenants(None)
    else:
        ids = await _tenant_ids(state.auth, _tokens(request))
        tenants = await state.dashboard.tenants(ids) if ids else []
    if not tenants:
        return None
    wanted = request.cookies.get(TENANT_COOKIE)
    current = next((t for t in tenants if t.id == wanted), tenants[0])
    return Viewer(
        tenant=current,
        tenants=tenants,
        csrf=csrf_token(request),
        auth_none=state.auth_mode == "none",
    )


async def add_token(
    request: web.Request, response: web.StreamResponse, state: DashboardState, token: str
) -> str:
    """Check ``token`` and add it to the session; returns its tenant id.

    Raises ``AuthError`` (its message is safe to show) for a token that does not verify,
    and ``ValueError`` when the session cannot hold another token.
    """
    token = token.strip()
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    if not token or _SEPARATOR in token or any(c.isspace() for c in token):
        raise AuthError("that is not an API token")
    who = await state.auth.authenticate(f"Bearer {token}")
    kept = [t for t in _tokens(request) if t != token]
    # drop tokens of the same tenant: the newest one speaks for it
    same = set()
    for t in kept:
        try:
            if (await state.auth.authenticate(f"Bearer {t}")).tenant_id == who.tenant_id:
                same.add(t)
        except AuthError:
            same.add(t)
    value = _SEPARATOR.join([*[t for t in kept if t not in same], token])
    if len(value) > MAX_SESSION_BYTES:
        raise ValueError("this session holds as many tokens as a cookie can; log out first")
    options = _cookie_options(request)
    response.set_cookie(SESSION_COOKIE, value, max_age=SESSION_SECONDS, **options)  # type: ignore[arg-type]
    set_tenant(request, response, who.tenant_id)
    return who.tenant_id


def set_tenant(request: web.Request, response: web.StreamResponse, tenant_id: str) -> None:
    options = _cookie_options(request)
    response.set_cookie(TENANT_COOKIE, tenant_id, max_age=SESSION_SECONDS, **options)  # type: ignore[arg-type]


def clear_session(response: web.StreamResponse) -> None:
    for name in (SESSION_COOKIE, TENANT_COOKIE):
        response.del_cookie(name, path="/")
