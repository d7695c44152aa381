"""The web dashboard over HTTP (no browser): login, the tenant check on every page and
action, CSRF, filters, HEWER_DASHBOARD_AUTH=none, and the WorkerPool report endpoint.

Two tenants' rows come from ``rest_world._populate``; run actions go to the recording
``FakeControl``, so a test can tell that a refused request changed nothing.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from tests.integration.harness import Replica
from tests.integration.rest_world import FakeControl, World, _populate

from hewer.engine.api.dashboard.setup import add_dashboard
from hewer.engine.api.rest.app import build_app
from hewer.engine.services.auth import Authenticator
from hewer.engine.services.autoscaling import Autoscaling
from hewer.engine.services.dashboard import Dashboard
from hewer.engine.services.definitions import Definitions
from hewer.engine.services.reads import Reads
from hewer.engine.services.scheduling import Scheduling
from hewer.engine.services.subscriptions import EventWatchers
from hewer.engine.services.tenant_objects import TenantObjects

_CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


@dataclass
class Site(World):
    """The REST tests' world (its tenants, tokens and rows) with a browser's requests."""

    async def page(self, path: str, *, status: int = 200) -> str:
        resp = await self.client.get(path, allow_redirects=False)
        text = await resp.text()
        assert resp.status == status, text[:500]
        return text

    async def csrf(self, path: str = "/login") -> str:
        found = _CSRF.search(await self.page(path))
        assert found is not None
        return found[1]

    async def post(
        self, path: str, data: dict[str, str], *, status: int = 303, **kwargs: Any
    ) -> web.StreamResponse:
        resp = await self.client.post(path, data=data, allow_redirects=False, **kwargs)
        assert resp.status == status, (await resp.text())[:500]
        return resp

    async def login(self, token: str) -> None:
        resp = await self.post("/login", {"csrf": await self.csrf(), "token": token})
        assert resp.headers["Location"] == "/runs"


SiteFactory = Callable[[str], Awaitable[Site]]


@pytest_asyncio.fixture
async def make_site(engine: Replica) -> AsyncIterator[SiteFactory]:
    repo = engine.repo
    tenant_a = await repo.ensure_tenant("tenant-a")
    tenant_b = await repo.ensure_tenant("tenant-b")
    ids = await _populate(repo, tenant_a, tenant_b)
    ids["b-wf"] = str(await repo.pool.fetchval("SELECT id FROM workflows WHERE name = 'b-wf'"))
    auth = Authenticator(
        repo=repo, secret=b"k" * 32, server_url="http://x", grpc_address="localhost:1"
    )
    clients: list[TestClient[Any, Any]] = []

    async def make(auth_mode: str) -> Site:
        control = FakeControl(repo=repo)
        dashboard = Dashboard(repo=repo, autoscaling=Autoscaling(repo=repo))
        app = build_app(
            reads=Reads(repo),
            objects=TenantObjects(repo),
            definitions=Definitions(repo),
            control=control,
            auth=auth,
            dashboard=dashboard,
        )
        add_dashboard(
            app,
            dashboard=dashboard,
            auth=auth,
            auth_mode=auth_mode,
            control=control,
            scheduling=Scheduling(
                repo=repo, bus=engine.bus, triggers=engine.triggers, lifecycle=engine.lifecycle
            ),
            run_events=EventWatchers(),
            heartbeat_timeout=30.0,
        )
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return Site(
            client=client,
            control=control,
            token_a=await auth.issue(tenant_id=tenant_a),
            token_b=await auth.issue(tenant_id=tenant_b),
            tenant_a=tenant_a,
            tenant_b=tenant_b,
            ids=ids,
        )

    yield make
    for client in clients:
        await client.close()


async def test_pages_need_a_login_and_the_rest_api_still_needs_its_token(
    make_site: SiteFactory,
) -> None:
    site = await make_site("token")
    for path in ("/", "/ui", "/dashboard"):
        resp = await site.client.get(path, allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/runs"
    resp = await site.client.get("/runs", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/login"
    resp = await site.client.get(f"/api/v1/stable/tenants/{site.tenant_a}/workflow-runs")
    assert resp.status == 401
    login = await site.client.get("/login")
    assert "Content-Security-Policy" in login.headers
    assert "script-src 'self'" in login.headers["Content-Security-Policy"]


async def test_login_checks_csrf_and_the_token(make_site: SiteFactory) -> None:
    site = await make_site("token")
    await site.page("/login")  # sets the CSRF key cookie
    await site.post("/login", {"csrf": "0" * 64, "token": site.token_a}, status=403)
    csrf = await site.csrf()
    resp = await site.post("/login", {"csrf": csrf, "token": "eyJnope"}, status=401)
    assert "invalid auth token" in await resp.text()
    await site.login(site.token_a)
    cookie = site.client.session.cookie_jar.filter_cookies(site.client.make_url("/"))
    assert "hewer_session" in cookie
    html = await site.page("/runs")
    assert site.token_a not in html  # a token is never rendered
    assert "tenant-a" in html


async def test_a_tenant_sees_and_touches_only_its_own_runs(make_site: SiteFactory) -> None:
    site = await make_site("token")
    await site.login(site.token_a)
    html = await site.page("/runs?range=all")
    assert site.ids["dag_run"][-8:] in html
    assert site.ids["b_run"][-8:] not in html
    await site.page(f"/runs/{site.ids['b_run']}", status=404)
    csrf = await site.csrf("/runs")
    await site.post(f"/runs/{site.ids['b_run']}/cancel", {"csrf": csrf}, status=404)
    await site.post(f"/runs/{site.ids['b_run']}/replay", {"csrf": csrf}, status=404)
    assert site.control.calls == []
    await site.page(f"/workflows/{site.ids['b-wf']}", status=404)
    await site.page("/runs/not-a-uuid", status=404)


async def test_actions_need_the_forms_csrf_token_and_this_origin(make_site: SiteFactory) -> None:
    site = await make_site("token")
    await site.login(site.token_a)
    run = site.ids["dag_run"]
    await site.post(f"/runs/{run}/cancel", {}, status=403)
    await site.post(f"/runs/{run}/cancel", {"csrf": "f" * 64}, status=403)
    csrf = await site.csrf(f"/runs/{run}")
    await site.post(
        f"/runs/{run}/cancel", {"csrf": csrf}, status=403, headers={"Origin": "https://evil.test"}
    )
    assert site.control.calls == []
    resp = await site.post(f"/runs/{run}/replay", {"csrf": csrf})
    assert resp.headers["Location"] == f"/runs/{run}"
    assert site.control.calls == [("replay", {"tenant_id": site.tenant_a, "ids": [run]})]


async def test_run_page_draws_the_dag_and_shows_the_error(make_site: SiteFactory) -> None:
    site = await make_site("token")
    await site.login(site.token_a)
    html = await site.page(f"/runs/{site.ids['dag_run']}")
    assert re.search(r'class="node node-COMPLETED" data-task="step1"', html)
    assert re.search(r'class="node node-FAILED" data-task="step3"', html)
    assert 'class="edge"' in html
    assert "Error" in html


async def test_bad_filters_are_a_400_page_with_the_reason(make_site: SiteFactory) -> None:
    site = await make_site("token")
    await site.login(site.token_a)
    assert "status: unknown BOGUS" in await site.page("/runs?status=BOGUS", status=400)
    assert "workflow: not a valid id" in await site.page("/runs?workflow=x", status=400)
    assert "one key=value a line" in await site.page("/runs?meta=nokey", status=400)
    assert "limit: 7 is not offered" in await site.page("/runs?limit=7", status=400)
    html = await site.page("/runs?range=all&status=FAILED")
    assert site.ids["dag_run"][-8:] in html and site.ids["single_run"][-8:] not in html


async def test_two_tokens_switch_between_tenants(make_site: SiteFactory) -> None:
    site = await make_site("token")
    await site.login(site.token_a)
    await site.page("/login")
    await site.login(site.token_b)  # the newest token's tenant is shown
    html = await site.page("/runs?range=all")
    assert 'id="tenant-switch"' in html and site.ids["b_run"][-8:] in html
    csrf = await site.csrf("/runs")
    await site.post("/tenant", {"csrf": csrf, "tenant": site.tenant_a})
    html = await site.page("/runs?range=all")
    assert site.ids["dag_run"][-8:] in html and site.ids["b_run"][-8:] not in html
    other = "00000000-0000-0000-0000-000000000000"
    await site.post("/tenant", {"csrf": await site.csrf("/runs"), "tenant": other}, status=403)


async def test_without_auth_every_tenant_is_offered(make_site: SiteFactory) -> None:
    site = await make_site("none")
    html = await site.page("/runs?range=all")
    assert 'id="tenant-switch"' in html and "Log out" not in html
    resp = await site.client.get("/login", allow_redirects=False)
    assert resp.status == 303
    # a POST still needs the CSRF token of this browser
    await site.post("/tenant", {"tenant": site.tenant_b}, status=403)


async def test_operator_reports_worker_pools(make_site: SiteFactory) -> None:
    site = await make_site("token")
    path = f"/api/v1/hewer/tenants/{site.tenant_a}/worker-pools/workers/report"
    headers = {"Authorization": f"Bearer {site.token_a}"}
    for body, message in [
        ({"desiredReplicas": 1, "replicas": 1}, "namespace"),
        ({"namespace": "ns", "replicas": 1}, "desiredReplicas is required"),
        ({"namespace": "ns", "desiredReplicas": -1, "replicas": 1}, "desiredReplicas"),
        ({"namespace": "ns", "desiredReplicas": 1, "replicas": 1, "decision": "x"}, "decision"),
    ]:
        resp = await site.client.put(path, json=body, headers=headers)
        assert resp.status == 400 and message in await resp.text()
    b_path = f"/api/v1/hewer/tenants/{site.tenant_b}/worker-pools/workers/report"
    resp = await site.client.put(
        b_path, json={"namespace": "ns", "desiredReplicas": 1, "replicas": 1}, headers=headers
    )
    assert resp.status == 403
    for desired, decision in [(1, None), (3, "up")]:
        resp = await site.client.put(
            path,
            json={
                "namespace": "ns",
                "desiredReplicas": desired,
                "replicas": 1,
                "autoscaling": True,
                "minReplicas": 0,
                "maxReplicas": 5,
                "queued": 27,
                "reason": "queue grew",
                "decision": decision,
            },
            headers=headers,
        )
        assert resp.status == 200, await resp.text()
    await site.login(site.token_a)
    html = await site.page("/worker-pools")
    assert "ns/workers" in html and "queue grew" in html and "0\N{EN DASH}5 replicas" in html
    assert 'class="line line-desired"' in html
    resp = await site.client.delete(path + "?namespace=ns", headers=headers)
    assert resp.status == 200
    resp = await site.client.delete(path + "?namespace=ns", headers=headers)
    assert resp.status == 404
    assert "Not reported" in await site.page("/worker-pools")
