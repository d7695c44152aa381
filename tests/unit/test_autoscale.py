"""The autoscaler's decision function (``hewer.operator.autoscale``): worked examples, then
its invariants for any input sequence (hypothesis)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hewer.operator.autoscale import (
    AutoscalingSpec,
    Decision,
    Observation,
    autoscaling_spec,
    decide,
    seed_history,
)
from hewer.operator.spec_common import InvalidSpec

STALE = 30.0


def obs(queued: int, running: int = 0, busy: int = 0, at: float = 0.0) -> Observation:
    return Observation(queued=queued, running=running, busy_workers=busy, at=at)


def step(spec: AutoscalingSpec, current: int, o: Observation | None, now: float, history=()):
    return decide(
        spec=spec,
        current=current,
        observation=o,
        history=history or seed_history(current=current, now=now - 1000),
        now=now,
        stale_after=STALE,
    )


def test_spec_defaults_and_refusals() -> None:
    assert autoscaling_spec(None, slots=5) is None
    spec = autoscaling_spec({"maxReplicas": 3}, slots=5)
    assert spec is not None
    assert (spec.min_replicas, spec.max_replicas, spec.target_per_replica) == (0, 3, 5)
    assert spec.scale_down_stabilization_seconds == 300 and spec.max_scale_up_step == 4
    for bad, words in (
        ({"minReplicas": 4, "maxReplicas": 3}, "must not exceed"),
        ({"targetPerReplica": 0}, "targetPerReplica: must be >= 1"),
        ({"maxScaleDownStep": 0}, "maxScaleDownStep: must be >= 1"),
        ({"maxReplica": 3}, "unknown fields ['maxReplica']"),
        ("x", "must be an object"),
    ):
        with pytest.raises(InvalidSpec, match=r"spec\.autoscaling") as exc:
            autoscaling_spec(bad, slots=5)
        assert words in exc.value.message


def test_formula_and_step() -> None:
    spec = AutoscalingSpec(max_replicas=10, target_per_replica=10, max_scale_up_step=4)
    d = step(spec, 1, obs(45, 10, busy=1, at=999), 1000)
    # ceil(55 / 10) = 6, but one decision adds at most 4
    assert (d.desired, d.direction, d.reason) == (5, "up", "QueueDepth")
    d = step(spec, 5, obs(500, 0, at=999), 1000)
    assert (d.desired, d.direction) == (9, "up")
    assert step(spec, 9, obs(500, at=999), 1000).desired == 10  # max


def test_activation_gates_only_zero_to_one() -> None:
    spec = AutoscalingSpec(activation_queued=3, target_per_replica=10)
    assert step(spec, 0, obs(2, at=999), 1000).desired == 0
    d = step(spec, 0, obs(3, at=999), 1000)
    assert (d.desired, d.reason) == (1, "Activation")
    # once awake, fewer queued tasks than the activation still keep a replica
    d = step(spec, 1, obs(1, at=999), 1000)
    assert (d.desired, d.direction) == (1, "hold")


def test_hold_without_a_fresh_metric() -> None:
    spec = AutoscalingSpec()
    d = step(spec, 3, None, 1000)
    assert (d.desired, d.reason) == (3, "MetricUnavailable")
    d = step(spec, 3, obs(0, at=1000 - STALE - 1), 1000)
    assert (d.desired, d.reason) == (3, "MetricStale")


def test_scale_down_waits_for_the_window_and_spares_busy_workers() -> None:
    spec = AutoscalingSpec(scale_down_stabilization_seconds=60, max_scale_down_step=5)
    history = seed_history(current=4, now=0)
    d = decide(
        spec=spec, current=4, observation=obs(0, at=30), history=history, now=30,
        stale_after=STALE,
    )  # fmt: skip
    assert (d.desired, d.reason) == (4, "ScaleDownStabilizing")
    d = decide(
        spec=spec, current=4, observation=obs(0, 2, busy=2, at=61), history=d.history, now=61,
        stale_after=STALE,
    )  # fmt: skip
    assert (d.desired, d.direction) == (2, "down")  # busy workers stay (and ceil(2/100) = 1)
    d = decide(
        spec=spec, current=2, observation=obs(0, 2, busy=2, at=62), history=d.history, now=62,
        stale_after=STALE,
    )  # fmt: skip
    assert (d.desired, d.reason) == (2, "BusyWorkers")


# -- invariants ------------------------------------------------------------------------------


@st.composite
def specs(draw: st.DrawFn) -> AutoscalingSpec:
    lo = draw(st.integers(0, 4))
    hi = draw(st.integers(max(lo, 1), 12))
    return AutoscalingSpec(
        min_replicas=lo,
        max_replicas=hi,
        target_per_replica=draw(st.integers(1, 20)),
        activation_queued=draw(st.integers(1, 5)),
        scale_up_stabilization_seconds=draw(st.integers(0, 20)),
        scale_down_stabilization_seconds=draw(st.integers(1, 60)),
        max_scale_up_step=draw(st.integers(1, 5)),
        max_scale_down_step=draw(st.integers(1, 5)),
    )


@dataclass
class Tick:
    dt: float
    queued: int
    running: int
    busy_share: float
    metric: str  # "ok", "none" or "stale"


ticks = st.builds(
    Tick,
    dt=st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0, 15.0, 61.0]),
    queued=st.integers(0, 150),
    running=st.integers(0, 60),
    busy_share=st.floats(0, 1),
    metric=st.sampled_from(["ok", "ok", "ok", "ok", "none", "stale"]),
)


def run(spec: AutoscalingSpec, start: int, sequence: list[Tick]):
    now, current = 0.0, start
    history = seed_history(current=current, now=now)
    actions: list[tuple[float, str]] = []
    steps: list[tuple[int, int, Observation | None, Decision]] = []
    for tick in sequence:
        now += tick.dt
        busy = int(current * tick.busy_share)  # busy workers are among the running pods
        o: Observation | None = None
        if tick.metric != "none":
            at = now if tick.metric == "ok" else now - STALE - 1
            o = Observation(queued=tick.queued, running=tick.running, busy_workers=busy, at=at)
        d = decide(
            spec=spec, current=current, observation=o, history=history, now=now,
            stale_after=STALE,
        )  # fmt: skip
        steps.append((current, busy, o, d))
        if d.direction != "hold":
            actions.append((now, d.direction))
        assert (d.direction == "up") == (d.desired > current)
        assert (d.direction == "down") == (d.desired < current)
        current, history = d.desired, d.history
    return steps, actions


@settings(max_examples=300, deadline=None)
@given(spec=specs(), data=st.data(), sequence=st.lists(ticks, min_size=1, max_size=60))
def test_bounds_and_busy_workers(
    spec: AutoscalingSpec, data: st.DataObject, sequence: list[Tick]
) -> None:
    start = data.draw(st.integers(spec.min_replicas, spec.max_replicas))
    for current, busy, o, d in run(spec, start, sequence)[0]:
        assert spec.min_replicas <= d.desired <= spec.max_replicas
        assert d.desired >= busy, "a busy worker was scaled away"
        if o is None or d.reason == "MetricStale":
            assert d.desired == current and d.reason in ("MetricUnavailable", "MetricStale")
        elif o.running > 0 and current > 0:
            assert d.desired >= 1, "scaled to zero while a task of the pool runs"


@settings(max_examples=300, deadline=None)
@given(spec=specs(), data=st.data(), sequence=st.lists(ticks, min_size=1, max_size=80))
def test_one_direction_change_per_window(
    spec: AutoscalingSpec, data: st.DataObject, sequence: list[Tick]
) -> None:
    start = data.draw(st.integers(spec.min_replicas, spec.max_replicas))
    _, actions = run(spec, start, sequence)
    window = spec.scale_down_stabilization_seconds
    # an "up" is never followed by a "down" within the window ...
    for i, (t_up, direction) in enumerate(actions):
        if direction == "up":
            for t_down, later in actions[i + 1 :]:
                if later == "down":
                    assert t_down - t_up >= window
    # ... so any span shorter than the window holds at most one direction change
    changes = [
        (actions[i - 1][0], actions[i][0])
        for i in range(1, len(actions))
        if actions[i][1] != actions[i - 1][1]
    ]
    for i in range(1, len(changes)):
        assert changes[i][1] - changes[i - 1][0] >= window


@settings(max_examples=200, deadline=None)
@given(spec=specs(), queued=st.integers(0, 4))
def test_sleeping_pool_wakes_only_at_activation(spec: AutoscalingSpec, queued: int) -> None:
    if spec.min_replicas:
        return
    d = step(spec, 0, obs(queued, at=999), 1000)
    if queued >= spec.activation_queued:
        assert (d.direction, d.reason) == ("up", "Activation") and d.desired >= 1
    else:
        assert (d.desired, d.direction) == (0, "hold")
