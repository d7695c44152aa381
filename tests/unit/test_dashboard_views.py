"""The dashboard's pure parts: DAG and timeline geometry, charts, a workflow's policies
read from its definition, trace rows and the runs filter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from multidict import MultiDict

from hewer.engine.api.dashboard.graphs import Span, dag_layout, line_chart, timeline_layout
from hewer.engine.api.dashboard.runs import FilterError, parse_filter, trace_rows
from hewer.engine.services.dashboard_views import workflow_view

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def test_dag_layers_follow_the_longest_path_from_a_root() -> None:
    dag = dag_layout([("a", [], "COMPLETED"), ("b", ["a"], "FAILED"), ("c", ["a", "b"], "QUEUED")])
    x = {n.name: n.x for n in dag.nodes}
    assert x["a"] < x["b"] < x["c"]
    assert len(dag.edges) == 3
    assert {n.name: n.status for n in dag.nodes}["b"] == "FAILED"
    assert dag.width >= x["c"] + dag.node_w


def test_dag_layout_survives_cycles_and_unknown_parents() -> None:
    dag = dag_layout([("a", ["b", "ghost"], "QUEUED"), ("b", ["a"], "QUEUED")])
    assert len(dag.nodes) == 2 and len(dag.edges) == 2


def test_long_task_names_are_cut_in_the_drawing_only() -> None:
    name = "x" * 40
    node = dag_layout([(name, [], "RUNNING")]).nodes[0]
    assert node.name == name and len(node.label) == 20 and node.label.endswith("…")


def test_timeline_splits_queue_wait_and_run_time() -> None:
    spans = [
        Span(
            "a #1",
            T0,
            T0 + timedelta(seconds=2),
            T0 + timedelta(seconds=2),
            T0 + timedelta(seconds=3),
            "COMPLETED",
        ),
        # the start arrived after the end: the run is measured from the assignment
        Span(
            "b #1",
            T0 + timedelta(seconds=3),
            T0 + timedelta(seconds=3.5),
            T0 + timedelta(seconds=4.5),
            T0 + timedelta(seconds=4),
            "FAILED",
        ),
        Span("c #1", T0 + timedelta(seconds=4), None, None, None, "QUEUED"),
    ]
    tl = timeline_layout(spans, now=T0 + timedelta(seconds=5))
    a, b, c = tl.rows
    assert a.wait_seconds == 2 and a.run_seconds == 1
    assert b.run_seconds == 0.5
    assert c.run_seconds is None and c.run_w == 0 and c.wait_seconds == 1
    assert tl.span_seconds == 5 and a.wait_x == tl.label_w
    assert timeline_layout([], now=T0).rows == []


def test_line_chart_scales_to_a_round_top_and_steps_replicas() -> None:
    times = [T0 + timedelta(minutes=i) for i in range(3)]
    chart = line_chart(times, [("q", "queued", [0, 7, 3])])
    assert chart.y_ticks[-1][1] == "10"
    assert chart.series[0].last == 3
    stepped = line_chart(times, [("d", "desired", [1, 2, 2])], step=True)
    assert len(stepped.series[0].points.split()) == 3 * 2  # a corner per change, and the end
    assert line_chart([], [("q", "queued", [])]).series[0].points == ""


def test_workflow_view_lists_concurrency_and_rate_limits_in_effect() -> None:
    row = {
        "id": "w",
        "name": "orders",
        "description": "",
        "is_paused": True,
        "version": "v2",
        "ordinal": 2,
        "versions": 2,
        "event_keys": ["order:new"],
        "crons": ["0 * * * *"],
        "sticky": None,
        "default_priority": 1,
        "runs_24h": 5,
        "definition": {
            "concurrency": {
                "expression": "input.user",
                "max_runs": 2,
                "limit_strategy": "GROUP_ROUND_ROBIN",
            },
            "tasks": [
                {
                    "readable_id": "charge",
                    "rate_limits": [{"key": "stripe", "units": 1, "duration": "SECOND"}],
                    "concurrency": [{"expression": "input.card", "max_runs": 1}],
                },
                {"readable_id": "mail", "rate_limits": [{"key_expr": "input.domain"}]},
            ],
            "on_failure_task": {"readable_id": "undo"},
        },
    }
    view = workflow_view(row)
    assert view.paused and view.tasks == ["charge", "mail", "undo (on failure)"]
    assert view.concurrency == [
        "workflow: input.user (max 2, GROUP_ROUND_ROBIN)",
        "charge: input.card (max 1, CANCEL_IN_PROGRESS)",
    ]
    assert view.rate_limits == [
        "charge: stripe (1 units, SECOND)",
        "mail: dynamic input.domain (1 units, MINUTE)",
    ]


def test_trace_rows_place_spans_on_one_time_axis() -> None:
    rows = trace_rows(
        [
            {"name": "run", "start": T0, "end": T0 + timedelta(seconds=2)},
            {"name": "task", "start": "2025-01-01T00:00:01Z", "duration_ms": 500},
            {"name": "odd"},
        ]
    )
    assert [r["x"] for r in rows[:2]] == [0.0, 50.0]
    assert rows[0]["w"] == 100.0 and rows[1]["ms"] == 500.0
    assert rows[2]["ms"] is None and rows[2]["w"] == 0


def test_runs_filter_reads_the_form() -> None:
    f, form, offset, limit = parse_filter(
        MultiDict(
            [
                ("status", "FAILED"),
                ("status", "QUEUED"),
                ("range", "1h"),
                ("meta", "env=prod\n\nteam = a"),
                ("limit", "100"),
                ("offset", "200"),
            ]
        )
    )
    assert f.statuses == ["FAILED", "QUEUED"] and limit == 100 and offset == 200
    assert f.additional_metadata == [("env", "prod"), ("team", "a")]
    assert datetime.now(UTC) - f.since < timedelta(hours=1, seconds=5)
    assert form["meta"] == "env=prod\n\nteam = a"
    f, *_ = parse_filter(MultiDict([("since", "2025-01-31T13:45")]))
    assert f.since == datetime(2025, 1, 31, 13, 45, tzinfo=UTC)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ([("status", "DONE")], "status"),
        ([("range", "2y")], "range"),
        ([("since", "yesterday")], "since"),
        ([("meta", "=x")], "metadata"),
        ([("offset", "-1")], "offset"),
    ],
)
def test_runs_filter_refuses_what_it_cannot_use(query: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(FilterError, match=message):
        parse_filter(MultiDict(query))
