"""Geometry of the dashboard's pictures: a run's DAG, the timeline of its task attempts and
line charts. Pure functions from data to coordinates; the templates draw them as SVG (so
names pass through Jinja's escaping like any other text).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

__all__ = ["Chart", "Dag", "Timeline", "dag_layout", "line_chart", "timeline_layout"]

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 168, 40, 56, 16, 8
LABEL_W, BARS_W, ROW_H = 180, 560, 22
# a name longer than this is cut in the drawing (the task list below shows it whole)
MAX_NODE_LABEL = 20


@dataclass(frozen=True, slots=True)
class DagNode:
    name: str
    label: str
    status: str
    x: int
    y: int
    anchor: str


@dataclass(frozen=True, slots=True)
class Dag:
    width: int
    height: int
    node_w: int
    node_h: int
    nodes: list[DagNode]
    edges: list[str]


def _depths(parents: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Longest distance from a root; a parent that is not a task (or a cycle) counts as none."""
    depth: dict[str, int] = {}

    def visit(name: str, trail: frozenset[str]) -> int:
        if name in depth:
            return depth[name]
        known = [p for p in parents.get(name, ()) if p in parents and p not in trail]
        value = 0 if not known else 1 + max(visit(p, trail | {name}) for p in known)
        depth[name] = value
        return value

    for name in parents:
        visit(name, frozenset())
    return depth


def dag_layout(tasks: Sequence[tuple[str, Sequence[str], str]]) -> Dag:
    """``tasks``: ``(name, parent names, status)`` in display order; layers left to right."""
    parents = {name: list(ps) for name, ps, _ in tasks}
    status = {name: st for name, _, st in tasks}
    depth = _depths(parents)
    layers: dict[int, list[str]] = {}
    for name, _, _ in tasks:
        layers.setdefault(depth[name], []).append(name)
    tallest = max((len(v) for v in layers.values()), default=1)
    height = PAD * 2 + tallest * NODE_H + (tallest - 1) * GAP_Y
    where: dict[str, tuple[int, int]] = {}
    nodes = []
    for layer, names in sorted(layers.items()):
        column_h = len(names) * NODE_H + (len(names) - 1) * GAP_Y
        top = (height - column_h) // 2
        for i, name in enumerate(names):
            x, y = PAD + layer * (NODE_W + GAP_X), top + i * (NODE_H + GAP_Y)
            where[name] = (x, y)
            label = name if len(name) <= MAX_NODE_LABEL else name[: MAX_NODE_LABEL - 1] + "…"
            nodes.append(DagNode(name, label, status[name], x, y, f"task-{name}"))
    edges = []
    for name, ps, _ in tasks:
        for p in ps:
            if p not in where:
                continue
            (px, py), (cx, cy) = where[p], where[name]
            x1, y1, x2, y2 = px + NODE_W, py + NODE_H // 2, cx, cy + NODE_H // 2
            mid = (x1 + x2) // 2
            edges.append(f"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2 - 4},{y2}")
    width = PAD * 2 + (max(layers, default=0) + 1) * (NODE_W + GAP_X) - GAP_X
    return Dag(width, height, NODE_W, NODE_H, nodes, edges)


@dataclass(frozen=True, slots=True)
class TimelineRow:
    label: str
    y: int
    wait_x: float
    wait_w: float
    run_x: float
    run_w: float
    outcome: str
    wait_seconds: float
    run_seconds: float | None


@dataclass(frozen=True, slots=True)
class Timeline:
    width: int
    height: int
    label_w: int
    rows: list[TimelineRow]
    ticks: list[tuple[float, str]]
    span_seconds: float


def _seconds_label(s: float) -> str:
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    return f"{s / 60:.1f} min"


@dataclass(frozen=True, slots=True)
class Span:
    """What the timeline needs of one attempt."""

    label: str
    queued_at: datetime
    assigned_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    outcome: str


def timeline_layout(spans: Sequence[Span], *, now: datetime) -> Timeline:
    """Each attempt on its own row: waiting in the queue (queued until assigned), then
    running (started, or assigned, until it ended; until ``now`` if it has not)."""
    if not spans:
        return Timeline(LABEL_W + BARS_W, ROW_H, LABEL_W, [], [], 0.0)
    t0 = min(s.queued_at for s in spans)
    t1 = max(max(s.ended_at or now, s.queued_at) for s in spans)
    total = max((t1 - t0).total_seconds(), 0.001)
    scale = BARS_W / total

    def x(t: datetime) -> float:
        return round(LABEL_W + (t - t0).total_seconds() * scale, 1)

    rows = []
    for i, s in enumerate(spans):
        began = s.assigned_at or s.started_at
        wait_end = began or s.ended_at or now
        # a worker may report the start after the end (the SDK sends both at once)
        in_order = s.ended_at is None or (s.started_at or now) <= s.ended_at
        started = s.started_at if in_order else None
        run_from = started or s.assigned_at
        run_to = s.ended_at or now
        run_w = 0.0 if run_from is None else max(x(run_to) - x(run_from), 1.0)
        rows.append(
            TimelineRow(
                label=s.label,
                y=i * ROW_H,
                wait_x=x(s.queued_at),
                wait_w=max(x(wait_end) - x(s.queued_at), 1.0),
                run_x=x(run_from) if run_from is not None else x(wait_end),
                run_w=run_w,
                outcome=s.outcome,
                wait_seconds=max(0.0, (wait_end - s.queued_at).total_seconds()),
                run_seconds=None if run_from is None else (run_to - run_from).total_seconds(),
            )
        )
    ticks = [(LABEL_W + BARS_W * k / 4, _seconds_label(total * k / 4)) for k in range(5)]
    return Timeline(LABEL_W + BARS_W, len(rows) * ROW_H, LABEL_W, rows, ticks, total)


@dataclass(frozen=True, slots=True)
class ChartSeries:
    name: str
    kind: str
    points: str
    last: float


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    left: int
    bottom: int
    series: list[ChartSeries]
    y_ticks: list[tuple[float, str]]
    x_ticks: list[tuple[float, str]]


def line_chart(
    times: Sequence[datetime],
    series: Sequence[tuple[str, str, Sequence[float]]],
    *,
    width: int = 640,
    height: int = 180,
    step: bool = False,
) -> Chart:
    """``series``: ``(name, css kind, values)``, one value per time. ``step``: hold each
    value until the next time (replica counts), instead of a straight line."""
    left, right, top, bottom = 40, 8, 8, height - 20
    peak = max([1.0, *(v for _, _, values in series for v in values)])
    # a round top for the axis: 1, 2, 5 times a power of ten
    magnitude = 1.0
    while magnitude * 10 <= peak:
        magnitude *= 10
    top_value = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= peak)
    if len(times) < 2:
        first = last = times[0] if times else None
    else:
        first, last = times[0], times[-1]
    span = 1.0 if first is None or last is None else max((last - first).total_seconds(), 1.0)

    def xy(t: datetime, v: float) -> tuple[float, float]:
        assert first is not None
        x = left + (width - left - right) * (t - first).total_seconds() / span
        y = bottom - (bottom - top) * v / top_value
        return round(x, 1), round(y, 1)

    drawn = []
    for name, kind, values in series:
        pts: list[tuple[float, float]] = []
        for t, v in zip(times, values, strict=False):
            x, y = xy(t, v)
            if step and pts:
                pts.append((x, pts[-1][1]))
            pts.append((x, y))
        if step and pts:
            pts.append((float(width - right), pts[-1][1]))
        drawn.append(
            ChartSeries(
                name=name,
                kind=kind,
                points=" ".join(f"{x},{y}" for x, y in pts),
                last=float(values[-1]) if values else 0.0,
            )
        )
    y_ticks = [(bottom - (bottom - top) * k / 2, f"{top_value * k / 2:g}") for k in range(3)]
    x_ticks = []
    if first is not None and last is not None:
        for k in range(5):
            t = first + (last - first) * k / 4
            x_ticks.append((xy(t, 0)[0], t.strftime("%H:%M")))
    return Chart(width, height, left, bottom, drawn, y_ticks, x_ticks)
