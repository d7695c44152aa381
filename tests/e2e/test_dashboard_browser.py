"""The web dashboard in a real headless Chromium (Debian's ``chromium``, driven through
Playwright's Python API with ``executable_path``: no browser download).

Against the session's engine and an official SDK worker serving ``dashboard_workflows``:
log in with a token, find a failed run by filter and see its DAG, error and logs, replay it
and see the new attempt, cancel a running run, pause a workflow, watch a worker and the
queue chart under load, check that a second tenant sees none of the first tenant's runs and
that a ``<script>`` in a run's input is shown as text. Screenshots of the main pages are
written to a temp directory, or to ``HEWER_SCREENSHOT_DIR``: the README's are refreshed with
``HEWER_SCREENSHOT_DIR=docs/screenshots`` (a plain test run leaves the checkout as it was).

Skipped only where ``/usr/bin/chromium`` is missing outside CI; in CI (``CI`` set), where
``.ci/run`` installs it, a missing browser fails the module.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dashboard_workflows import ORDER, SLOW
from e2e_support import Engine, start_worker

CHROMIUM = Path(os.environ.get("HEWER_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(
    os.environ.get("HEWER_SCREENSHOT_DIR", Path(tempfile.gettempdir()) / "hewer-screenshots")
)

if not CHROMIUM.exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
    pytest.skip(f"no {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True)

from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright  # noqa: E402

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


@dataclass
class Dash:
    engine: Engine
    tenant: str
    browser: Browser
    context: BrowserContext

    @property
    def base(self) -> str:
        return self.engine.server_url

    def trigger(self, workflow: str, data: dict[str, Any], *, token: str | None = None) -> str:
        tenant = self.engine.tenant_of(token)
        deadline = time.monotonic() + 20
        while True:
            r = self.engine.rest(
                "POST",
                f"/api/v1/stable/tenants/{tenant}/workflow-runs/trigger",
                token=token,
                json={"workflowName": workflow, "input": data},
            )
            if r.status_code == 200:
                return str(r.json()["run"]["metadata"]["id"])
            # the worker registers its workflows as it starts
            assert time.monotonic() < deadline, r.text
            time.sleep(0.3)

    def status(self, run_id: str) -> str:
        r = self.engine.rest("GET", f"/api/v1/stable/workflow-runs/{run_id}/status")
        assert r.status_code == 200, r.text
        return str(r.json())

    def wait_status(self, run_id: str, wanted: Callable[[str], bool], *, within: float) -> str:
        deadline = time.monotonic() + within
        while not wanted(found := self.status(run_id)):
            assert time.monotonic() < deadline, f"run {run_id} stayed {found}"
            time.sleep(0.2)
        return found

    def cancel(self, run_ids: list[str]) -> None:
        self.engine.rest(
            "POST",
            f"/api/v1/stable/tenants/{self.tenant}/tasks/cancel",
            json={"externalIds": run_ids},
        )

    def page(self) -> Page:
        page = self.context.new_page()
        page.set_default_timeout(15_000)
        return page


def _shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def _login(page: Page, base: str, token: str) -> None:
    page.goto(base + "/login")
    page.fill("#token", token)
    page.click("form[action='/login'] button[type=submit]")
    expect(page).to_have_url(re.compile(r"/runs$"))


@pytest.fixture(scope="module")
def dash(engine: Engine, mark_dir: Path) -> Iterator[Dash]:
    with (
        start_worker(
            engine,
            name=f"dash-{uuid.uuid4().hex[:6]}",
            workflows=[ORDER, SLOW],
            mark_dir=mark_dir,
            slots=2,
        ),
        sync_playwright() as playwright,
    ):
        # as root Chromium needs --no-sandbox; the pages are our own
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1366, "height": 860})
        try:
            yield Dash(engine=engine, tenant=engine.tenant_of(), browser=browser, context=context)
        finally:
            context.close()
            browser.close()


def test_login_with_a_token(dash: Dash) -> None:
    page = dash.page()
    page.goto(dash.base + "/")
    expect(page).to_have_url(re.compile(r"/login$"))
    _shot(page, "login")
    page.fill("#token", "not-a-token")
    page.click("form[action='/login'] button[type=submit]")
    expect(page.locator("[role=alert]")).to_contain_text("invalid auth token")
    _login(page, dash.base, dash.engine.token)
    expect(page.locator("h1")).to_have_text("Runs")
    cookie = next(c for c in dash.context.cookies() if c["name"] == "hewer_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page.close()


def test_failed_run_by_filter_then_dag_error_logs_and_replay(dash: Dash) -> None:
    ok = dash.trigger(ORDER, {"item": "pen"})
    failed = dash.trigger(ORDER, {"item": "lamp", "fail": True})
    dash.wait_status(failed, lambda s: s == "FAILED", within=30)
    dash.wait_status(ok, lambda s: s == "COMPLETED", within=30)

    page = dash.page()
    page.goto(dash.base + "/runs")
    page.check("input[name=status][value=FAILED]")
    page.select_option("#f-workflow", label=ORDER)
    page.click("form.filters button[type=submit]")
    rows = page.locator("table.runs tbody tr")
    expect(rows.first).to_contain_text(failed[-8:])
    assert ok[-8:] not in page.locator("table.runs").inner_text()
    _shot(page, "runs")

    page.click(f"a[href='/runs/{failed}']")
    expect(page.locator("#run-status")).to_contain_text("FAILED")
    expect(page.locator("#dag .node-COMPLETED[data-task=prepare]")).to_have_count(1)
    expect(page.locator("#dag .node-FAILED[data-task=charge]")).to_have_count(1)
    expect(page.locator("pre.error-text")).to_contain_text("card declined")
    expect(page.locator("#logs")).to_contain_text("charging the card")
    expect(page.locator("#timeline .attempt")).to_have_count(2)
    _shot(page, "run")

    page.click("form[action$='/replay'] button")
    expect(page.locator(".flash")).to_contain_text("Replaying")
    # the page follows the run by itself until it is final again, now with a 2nd attempt
    # a run's replay starts again from its roots: a second attempt of prepare, and charge
    # (recreated downstream) fails again
    expect(page.locator("#timeline")).to_contain_text("prepare #2", timeout=20_000)
    expect(page.locator("#run-status")).to_contain_text("FAILED", timeout=20_000)
    page.close()


def test_cancel_a_running_run(dash: Dash) -> None:
    run_id = dash.trigger(SLOW, {"seconds": 60})
    dash.wait_status(run_id, lambda s: s == "RUNNING", within=20)
    page = dash.page()
    page.goto(f"{dash.base}/runs/{run_id}")
    expect(page.locator("#run-status")).to_contain_text("RUNNING")
    page.click("form[action$='/cancel'] button")
    expect(page.locator("#run-status")).to_contain_text("CANCELLED", timeout=20_000)
    assert dash.status(run_id) == "CANCELLED"
    page.close()


def test_pause_and_unpause_a_workflow(dash: Dash) -> None:
    page = dash.page()
    page.goto(dash.base + "/workflows")
    row = page.locator(f"tr[data-workflow='{ORDER}']")
    row.locator("form[action$='/pause'] button").click()
    expect(page.locator(".flash")).to_have_text("Workflow paused.")
    expect(page.locator(f"tr[data-workflow='{ORDER}']")).to_contain_text("paused")
    held = dash.trigger(ORDER, {"item": "held"})
    time.sleep(1.0)
    assert dash.status(held) == "QUEUED"  # a paused workflow's runs wait
    _shot(page, "workflows")
    page.locator(f"tr[data-workflow='{ORDER}'] form[action$='/unpause'] button").click()
    expect(page.locator(".flash")).to_have_text("Workflow resumed.")
    dash.wait_status(held, lambda s: s == "COMPLETED", within=20)
    page.close()


def test_worker_and_queue_chart_move_under_load(dash: Dash) -> None:
    page = dash.page()
    page.goto(dash.base + "/queues")
    before = page.locator("#queue-chart polyline.line-queued").get_attribute("points")
    # 2 slots, 8 runs of 3 s: six wait in the queue
    runs = [dash.trigger(SLOW, {"seconds": 3}) for _ in range(8)]
    try:
        expect(page.locator("#queued-total")).not_to_have_text("0", timeout=10_000)
        expect(page.locator("#running-total")).to_have_text("2", timeout=10_000)
        after = page.locator("#queue-chart polyline.line-queued").get_attribute("points")
        assert after != before
        expect(page.locator(f"tr[data-task='{SLOW}']")).to_be_visible()
        _shot(page, "queues")

        page.goto(dash.base + "/workers")
        worker = page.locator("tr[data-worker^='dash-']")
        expect(worker.locator(".st")).to_have_text("active")
        expect(worker.locator(".used")).to_have_text("2", timeout=10_000)
        _shot(page, "workers")
    finally:
        dash.cancel(runs)
        page.close()


def test_a_second_tenant_sees_none_of_the_first_tenants_runs(dash: Dash) -> None:
    first = dash.trigger(ORDER, {"item": "secret"})
    other_token = dash.engine.create_token("dash-other")
    context = dash.browser.new_context()
    try:
        page = context.new_page()
        _login(page, dash.base, other_token)
        page.goto(dash.base + "/runs?range=all")
        expect(page.locator("p.count")).to_have_text("0 runs")
        response = page.goto(f"{dash.base}/runs/{first}")
        assert response is not None and response.status == 404
        page.goto(dash.base + "/workflows")
        assert ORDER not in page.locator("main").inner_text()
    finally:
        context.close()

    # one session holding both tokens switches between the two tenants
    page = dash.page()
    _login(page, dash.base, other_token)
    page.select_option("#tenant-switch", label="dash-other")
    expect(page.locator("p.count")).to_have_text(re.compile(r"^0 runs"))
    page.select_option("#tenant-switch", label="default")
    expect(page.locator("table.runs")).to_contain_text(first[-8:])
    page.close()


def test_script_in_a_runs_input_is_shown_as_text(dash: Dash) -> None:
    payload = "<script>window.__pwned = 1</script><img src=x onerror='window.__pwned = 2'>"
    run_id = dash.trigger(ORDER, {"item": "x", "note": payload})
    page = dash.page()
    page.goto(f"{dash.base}/runs/{run_id}")
    expect(page.locator("#run-input")).to_contain_text("<script>window.__pwned = 1</script>")
    assert page.locator("#run-input script, #run-input img").count() == 0
    assert page.evaluate("window.__pwned") is None
    page.close()


def test_dark_mode_and_the_other_pages_render(dash: Dash) -> None:
    context = dash.browser.new_context(viewport={"width": 1366, "height": 860}, color_scheme="dark")
    try:
        page = context.new_page()
        _login(page, dash.base, dash.engine.token)
        page.goto(dash.base + "/runs?status=FAILED")
        page.click("table.runs tbody a")
        expect(page.locator("#dag")).to_be_visible()
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(21, 23, 27)"
        _shot(page, "run-dark")
        for path, heading in [
            ("/crons", "Crons and schedules"),
            ("/events", "Events"),
            ("/rate-limits", "Rate limits"),
            ("/worker-pools", "Worker pools"),
        ]:
            response = page.goto(dash.base + path)
            assert response is not None and response.status == 200
            expect(page.locator("h1")).to_have_text(heading)
        # the session engine's operator tests may have reported pools by now
        if page.locator("section.pool").count() == 0:
            expect(page.locator(".notice")).to_contain_text("Not reported")
        else:
            expect(page.locator("section.pool dt").first).to_have_text("Desired")
    finally:
        context.close()
