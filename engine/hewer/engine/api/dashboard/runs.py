"""Runs: the filtered, paginated list and one run (its DAG, attempt timeline, input,
output, errors, logs, live stream output and trace), with Cancel and Replay.

A span from ``spans_for_run`` is drawn from these keys when present: ``name``,
``span_id``, ``parent_id``, ``start`` and ``end`` (datetimes, ISO strings or epoch seconds)
or ``duration_ms``, ``status`` and ``attributes`` (a dict).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from hewer.engine.api.dashboard.graphs import Span, dag_layout, timeline_layout
from hewer.engine.api.dashboard.render import STATE, NotFound, page, redirect, render
from hewer.engine.api.dashboard.session import Viewer
from hewer.engine.api.rest.protocols import RunControl
from hewer.engine.services.dashboard import RunFilter
from hewer.engine.services.subscriptions import EventWatchers

__all__ = ["CONTROL", "RUN_EVENTS", "routes"]

routes = web.RouteTableDef()
CONTROL = web.AppKey[RunControl]("dashboard_control")
RUN_EVENTS = web.AppKey("dashboard_run_events", EventWatchers)

STATUSES = ("QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED")
RANGES = {
    "1h": timedelta(hours=1),
    "24h": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "all": None,
}
PAGE_SIZES = (50, 100, 250, 1000)
# an open stream ends after this long; the page reopens it if the run still goes on
STREAM_SECONDS = 300.0
STREAM_KEEPALIVE_SECONDS = 15.0


class FilterError(ValueError):
    """A filter value the runs page cannot use; shown above the list with a 400."""


def _uuid(value: str, what: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise FilterError(f"{what}: not a valid id") from None


def _when(value: str, what: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise FilterError(f"{what}: expected a date and time such as 2025-01-31T13:45") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _metadata(text: str) -> list[tuple[str, str]]:
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise FilterError(f"metadata: write one key=value a line, got {line[:60]!r}")
        pairs.append((key.strip(), value.strip()))
    return pairs


def _int(value: str, what: str, *, default: int, choices: tuple[int, ...] = ()) -> int:
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise FilterError(f"{what}: expected a whole number") from None
    if number < 0 or (choices and number not in choices):
        raise FilterError(f"{what}: {number} is not offered")
    return number


def parse_filter(query: Any) -> tuple[RunFilter, dict[str, Any], int, int]:
    """The filter, the form's values (to show them again), offset and limit."""
    statuses = [s for s in query.getall("status", []) if s]
    unknown = [s for s in statuses if s not in STATUSES]
    if unknown:
        raise FilterError(f"status: unknown {', '.join(unknown)}")
    workflow = query.get("workflow", "")
    span = query.get("range", "7d")
    if span not in RANGES:
        raise FilterError(f"range: expected one of {', '.join(RANGES)}")
    since = _when(query.get("since", ""), "since")
    until = _when(query.get("until", ""), "until")
    window = RANGES[span]
    if since is None:
        since = datetime(2000, 1, 1, tzinfo=UTC) if window is None else datetime.now(UTC) - window
    meta_text = query.get("meta", "")
    f = RunFilter(
        since=since,
        until=until,
        statuses=statuses or None,
        workflow_ids=[_uuid(workflow, "workflow")] if workflow else None,
        additional_metadata=_metadata(meta_text) or None,
    )
    form = {
        "status": statuses,
        "workflow": workflow,
        "range": span,
        "meta": meta_text,
        "since": query.get("since", ""),
        "until": query.get("until", ""),
    }
    limit = _int(query.get("limit", ""), "limit", default=PAGE_SIZES[0], choices=PAGE_SIZES)
    offset = _int(query.get("offset", ""), "offset", default=0)
    form["limit"] = limit
    return f, form, offset, limit


def _page_link(form: dict[str, Any], offset: int) -> str:
    pairs: list[tuple[str, Any]] = [("status", s) for s in form["status"]]
    pairs += [(k, form[k]) for k in ("workflow", "range", "since", "until", "meta") if form[k]]
    pairs += [("limit", form["limit"]), ("offset", offset)]
    return "/runs?" + urlencode(pairs)


@routes.get("/runs")
@page
async def runs_page(request: web.Request, viewer: Viewer) -> web.Response:
    dashboard = request.app[STATE].dashboard
    tenant = viewer.tenant.id
    workflows = await dashboard.workflow_names(tenant)
    try:
        f, form, offset, limit = parse_filter(request.query)
    except FilterError as exc:
        empty = {
            "status": [],
            "workflow": "",
            "range": "7d",
            "meta": "",
            "since": "",
            "until": "",
            "limit": PAGE_SIZES[0],
        }
        return render(
            request,
            "runs.html",
            viewer=viewer,
            status=400,
            error=str(exc),
            form=empty,
            runs=None,
            workflows=workflows,
            statuses=STATUSES,
            ranges=RANGES,
            sizes=PAGE_SIZES,
            prev_link=None,
            next_link=None,
        )
    result = await dashboard.runs(tenant, f, offset=offset, limit=limit)
    prev_link = _page_link(form, max(0, offset - limit)) if offset > 0 else None
    next_link = _page_link(form, offset + limit) if offset + limit < result.total else None
    return render(
        request,
        "runs.html",
        viewer=viewer,
        error=None,
        form=form,
        runs=result,
        workflows=workflows,
        statuses=STATUSES,
        ranges=RANGES,
        sizes=PAGE_SIZES,
        prev_link=prev_link,
        next_link=next_link,
    )


def _run_id(request: web.Request) -> str:
    try:
        return str(uuid.UUID(request.match_info["run"]))
    except ValueError:
        raise NotFound("There is no run with that id.") from None


def _epoch(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return None


def trace_rows(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Spans as waterfall rows: offset and width in percent of the whole trace."""
    timed = []
    for s in spans:
        start = _epoch(s.get("start"))
        end = _epoch(s.get("end"))
        if end is None and start is not None and isinstance(s.get("duration_ms"), int | float):
            end = start + float(s["duration_ms"]) / 1000
        timed.append((s, start, end))
    starts = [a for _, a, _ in timed if a is not None]
    ends = [b for _, _, b in timed if b is not None]
    t0 = min(starts, default=0.0)
    total = max(max(ends, default=t0) - t0, 1e-6)
    rows: list[dict[str, Any]] = []
    for s, start, end in timed:
        known = start is not None and end is not None
        rows.append(
            {
                "name": str(s.get("name", "span")),
                "status": str(s.get("status", "")),
                "attributes": s.get("attributes") if isinstance(s.get("attributes"), dict) else {},
                "x": 0.0 if start is None else round(100 * (start - t0) / total, 2),
                "w": round(max(100 * ((end or 0) - (start or 0)) / total, 0.5), 2) if known else 0,
                "ms": None if not known else round(((end or 0) - (start or 0)) * 1000, 1),
            }
        )
    return rows


@routes.get("/runs/{run}")
@page
async def run_page(request: web.Request, viewer: Viewer) -> web.Response:
    run = await request.app[STATE].dashboard.run(viewer.tenant.id, _run_id(request))
    if run is None:
        raise NotFound("There is no run with that id in this tenant.")
    now = datetime.now(UTC)
    dag = dag_layout([(t.name, t.parents, t.status) for t in run.tasks if not t.on_failure])
    timeline = timeline_layout(
        [
            Span(
                label=f"{a.task} #{a.retry_count + 1}",
                queued_at=a.queued_at,
                assigned_at=a.assigned_at,
                started_at=a.started_at,
                ended_at=a.ended_at,
                outcome=a.outcome or ("RUNNING" if a.assigned_at else "QUEUED"),
            )
            for a in run.attempts
        ],
        now=now,
    )
    return render(
        request,
        "run.html",
        viewer=viewer,
        run=run,
        dag=dag,
        timeline=timeline,
        trace=trace_rows(run.spans),
    )


async def _act(request: web.Request, viewer: Viewer, action: str) -> web.Response:
    run_id = _run_id(request)
    state = request.app[STATE]
    if await state.dashboard.run(viewer.tenant.id, run_id) is None:
        raise NotFound("There is no run with that id in this tenant.")
    control = request.app[CONTROL]
    if action == "cancel":
        done = await control.cancel(tenant_id=viewer.tenant.id, external_ids=[run_id])
        message = f"Cancelled {len(done)} task(s)." if done else "Nothing left to cancel."
    else:
        done = await control.replay(tenant_id=viewer.tenant.id, external_ids=[run_id])
        message = f"Replaying {len(done)} task(s)." if done else "Nothing to replay."
    return redirect(request, f"/runs/{run_id}", message=message)


@routes.post("/runs/{run}/cancel")
@page
async def cancel_run(request: web.Request, viewer: Viewer) -> web.Response:
    return await _act(request, viewer, "cancel")


@routes.post("/runs/{run}/replay")
@page
async def replay_run(request: web.Request, viewer: Viewer) -> web.Response:
    return await _act(request, viewer, "replay")


@routes.get("/runs/{run}/stream")
@page
async def run_stream(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    """Server-sent events: each stream chunk of the run's tasks as it is put, then ``done``
    when the run finishes. Only chunks sent while the page is open (nothing is stored)."""
    run_id = _run_id(request)
    run = await request.app[STATE].dashboard.run(viewer.tenant.id, run_id)
    if run is None:
        raise NotFound("There is no run with that id in this tenant.")
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    if run.is_final:
        await response.write(b"event: done\ndata: {}\n\n")
        return response
    watchers = request.app[RUN_EVENTS]
    queue = watchers.watch(run_id)
    deadline = time.monotonic() + STREAM_SECONDS
    try:
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = await asyncio.wait_for(queue.get(), min(left, STREAM_KEEPALIVE_SECONDS))
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            if event.kind == "STREAM":
                data = json.dumps({"task": event.task_id, "text": event.payload})
                await response.write(f"event: chunk\ndata: {data}\n\n".encode())
            elif event.kind.startswith("RUN_"):
                await response.write(b"event: done\ndata: {}\n\n")
                break
    except ConnectionResetError:
        pass  # the page was closed
    finally:
        watchers.forget(run_id, queue)
    return response
