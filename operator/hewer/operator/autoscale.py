"""The autoscaler's decision: how many workers a WorkerPool should run. Pure (no I/O, no
clock): the caller passes the time, the pool's spec, what the engine said and the history
of earlier recommendations, and gets the replica count with a reason.

The formula::

    demand  = ceil((queued + running) / targetPerReplica)
              (0 while the pool is at 0 replicas, nothing runs and fewer than
               activationQueued tasks are queued: activation only gates 0 -> 1)
    up      = min(clamp(demand, min, max) over the last scaleUpStabilizationSeconds)
    down    = max(clamp(demand, min, max) over the last scaleDownStabilizationSeconds)
    desired = min(up, current + maxScaleUpStep)                  if up > current
              max(down, current - maxScaleDownStep, busy)        if down < current
              current                                            otherwise

``queued`` counts only runnable work (the engine leaves out tasks held back by a
concurrency key or a rate limit: they could not use another replica). ``busy`` is the
number of the pool's workers running a task: a scale-down never goes below it, so nothing
scales to zero while a task of the pool runs. Without a fresh metric the decision is
"hold". Stabilization is the HPA's (a scale-up must be wanted for the whole up window, a
scale-down for the whole down window), so an "up" is never followed by a "down" sooner
than ``scaleDownStabilizationSeconds`` later: within one window the direction changes at
most once, whatever the queue does (property-tested in tests/unit/test_autoscale.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from hewer.operator.spec_common import InvalidSpec, check_int

__all__ = [
    "AutoscalingSpec",
    "Decision",
    "Observation",
    "autoscaling_spec",
    "decide",
    "demand",
    "seed_history",
]

Direction = Literal["up", "down", "hold"]
# (seconds on the caller's monotonic clock, unclamped demand)
History = tuple[tuple[float, int], ...]


@dataclass(frozen=True, slots=True)
class AutoscalingSpec:
    """``WorkerPool.spec.autoscaling`` with defaults applied (see :func:`autoscaling_spec`)."""

    min_replicas: int = 0
    max_replicas: int = 10
    target_per_replica: int = 100
    activation_queued: int = 1
    scale_up_stabilization_seconds: int = 0
    scale_down_stabilization_seconds: int = 300
    max_scale_up_step: int = 4
    max_scale_down_step: int = 1
    drain_timeout_seconds: int = 600

    def clamp(self, n: int) -> int:
        return max(self.min_replicas, min(self.max_replicas, n))


@dataclass(frozen=True, slots=True)
class Observation:
    """What the engine said about the pool, and when (the caller's monotonic clock)."""

    queued: int
    running: int
    busy_workers: int
    at: float


@dataclass(frozen=True, slots=True)
class Decision:
    desired: int
    direction: Direction
    reason: str
    message: str
    history: History


def autoscaling_spec(raw: Any, *, slots: int) -> AutoscalingSpec | None:
    """The validated autoscaling block (None when the pool is not autoscaled). The CRD's
    schema and CEL rules refuse the same input at apply time; this repeats them for
    clusters that skip validation and names the field."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise InvalidSpec("InvalidSpec", "spec.autoscaling must be an object")
    known = {
        "minReplicas",
        "maxReplicas",
        "targetPerReplica",
        "activationQueued",
        "scaleUpStabilizationSeconds",
        "scaleDownStabilizationSeconds",
        "maxScaleUpStep",
        "maxScaleDownStep",
        "drainTimeoutSeconds",
    }
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InvalidSpec("InvalidSpec", f"spec.autoscaling: unknown fields {unknown}")

    def field(name: str, default: int, minimum: int) -> int:
        return check_int(raw.get(name, default), f"spec.autoscaling.{name}", minimum=minimum)

    spec = AutoscalingSpec(
        min_replicas=field("minReplicas", 0, 0),
        max_replicas=field("maxReplicas", 10, 1),
        target_per_replica=field("targetPerReplica", slots, 1),
        activation_queued=field("activationQueued", 1, 1),
        scale_up_stabilization_seconds=field("scaleUpStabilizationSeconds", 0, 0),
        scale_down_stabilization_seconds=field("scaleDownStabilizationSeconds", 300, 0),
        max_scale_up_step=field("maxScaleUpStep", 4, 1),
        max_scale_down_step=field("maxScaleDownStep", 1, 1),
        drain_timeout_seconds=field("drainTimeoutSeconds", 600, 0),
    )
    if spec.min_replicas > spec.max_replicas:
        raise InvalidSpec(
            "InvalidSpec",
            f"spec.autoscaling.minReplicas ({spec.min_replicas}) must not exceed "
            f"maxReplicas ({spec.max_replicas})",
        )
    return spec


def demand(spec: AutoscalingSpec, observation: Observation, *, current: int) -> int:
    """Replicas the work asks for, before bounds and stabilization."""
    work = observation.queued + observation.running
    if current == 0 and observation.running == 0 and observation.queued < spec.activation_queued:
        return 0
    return math.ceil(work / spec.target_per_replica)


def seed_history(*, current: int, now: float) -> History:
    """The history of an autoscaler that just started: as if ``current`` had been asked for
    until now, so a restarted operator waits a whole down window before shrinking."""
    return ((now, current),)


def _window(history: History, now: float, seconds: float) -> list[int]:
    """Demands younger than ``seconds`` (the newest always counts)."""
    return [d for t, d in history if now - t < seconds or t == history[-1][0]]


def decide(
    *,
    spec: AutoscalingSpec,
    current: int,
    observation: Observation | None,
    history: Sequence[tuple[float, int]],
    now: float,
    stale_after: float,
) -> Decision:
    """The replica count for now. ``current`` is the Deployment's ``spec.replicas``;
    ``history`` the previous decision's ``history`` (or :func:`seed_history`)."""
    past: History = tuple(history)
    if observation is None:
        return Decision(
            current, "hold", "MetricUnavailable", "no answer from the engine: holding", past
        )
    age = now - observation.at
    if age > stale_after:
        return Decision(
            current,
            "hold",
            "MetricStale",
            f"the engine's last answer is {age:.0f}s old: holding",
            past,
        )
    raw = demand(spec, observation, current=current)
    keep = max(spec.scale_up_stabilization_seconds, spec.scale_down_stabilization_seconds)
    kept: History = (*((t, d) for t, d in past if now - t < keep), (now, raw))
    up = min(spec.clamp(d) for d in _window(kept, now, spec.scale_up_stabilization_seconds))
    down = max(spec.clamp(d) for d in _window(kept, now, spec.scale_down_stabilization_seconds))
    work = (
        f"queued {observation.queued}, running {observation.running}, "
        f"busy workers {observation.busy_workers}"
    )
    if up > current:
        desired = min(up, current + spec.max_scale_up_step)
        reason = "Activation" if current == 0 else "QueueDepth"
        return Decision(desired, "up", reason, f"{current} -> {desired}: {work}", kept)
    if down < current:
        floor = min(observation.busy_workers, current)
        desired = max(down, current - spec.max_scale_down_step, floor)
        if desired == current:
            return Decision(current, "hold", "BusyWorkers", f"every worker is busy: {work}", kept)
        reason = "Idle" if observation.queued + observation.running == 0 else "QueueDepth"
        return Decision(desired, "down", reason, f"{current} -> {desired}: {work}", kept)
    if spec.clamp(raw) < current:
        return Decision(
            current,
            "hold",
            "ScaleDownStabilizing",
            f"fewer workers wanted ({spec.clamp(raw)}); waiting out the "
            f"{spec.scale_down_stabilization_seconds}s stabilization window: {work}",
            kept,
        )
    return Decision(current, "hold", "Steady", f"{current} replicas fit: {work}", kept)
