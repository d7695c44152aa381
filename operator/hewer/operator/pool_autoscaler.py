"""The autoscaler of one WorkerPool: a kopf daemon per pool, idle unless
``spec.autoscaling`` is set.

Each pass reads the pool's aggregate from the engine through a long-poll (answered at once
when more work is queued than last seen, else after ``HEWER_OPERATOR_AUTOSCALE_POLL_SECONDS``),
asks the pure :func:`hewer.operator.autoscale.decide`, and acts: a scale-up writes the
Deployment's replicas through ``/scale``; a scale-down drains first (``pool_drain``). Every
pass writes the pool's status (desired, current, queued, running, busy workers) and the
operator's metrics; every scale and every change of the hold reason is a Kubernetes Event.
While the engine is unreachable or answers garbage the pool holds its replicas and says why.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from hewer.operator import pool_specs
from hewer.operator.autoscale import (
    AutoscalingSpec,
    Decision,
    History,
    Observation,
    decide,
    seed_history,
)
from hewer.operator.engine_client import EngineError
from hewer.operator.handler_common import State
from hewer.operator.kube import Kube, KubeError
from hewer.operator.metrics import METRICS
from hewer.operator.pool_drain import DELETION_COST, VICTIM_COST, choose_victims, pod_views
from hewer.operator.spec_common import GROUP, VERSION, InvalidSpec, now_iso

__all__ = ["PoolAutoscaler", "initial_replicas", "run_daemon"]

log = logging.getLogger("hewer.operator.autoscaler")
MIN_PASS_SECONDS = 0.2  # between two passes at least (a growing queue answers at once)
DRAIN_CHECK_SECONDS = 1.0


def observation_of(stats: Mapping[str, Any], at: float) -> Observation:
    return Observation(
        queued=int(stats["queued"]),
        running=int(stats["running"]),
        busy_workers=int(stats["busyWorkers"]),
        at=at,
    )


async def initial_replicas(state: State, name: str, pool: Mapping[str, Any]) -> int:
    """What a new autoscaled pool starts at: the decision for its queue now (0 for an empty
    queue with minReplicas 0), or minReplicas when the engine cannot say."""
    spec: AutoscalingSpec = pool["autoscaling"]
    try:
        stats = await state.engine.pool_stats(name, workflows=pool["workflows"])
    except EngineError:
        return spec.min_replicas
    now = time.monotonic()
    decision = decide(
        spec=spec,
        current=0,
        observation=observation_of(stats, now),
        history=seed_history(current=0, now=now),
        now=now,
        stale_after=60.0,
    )
    return decision.desired


@dataclass
class PoolAutoscaler:
    state: State
    kube: Kube
    namespace: str
    name: str
    body: Any
    clock: Callable[[], float] = time.monotonic
    history: History | None = None
    written: int | None = None
    observation: Observation | None = None
    known_queued: int = 0
    last_reason: str = ""
    # the last decision reason sent to the engine's dashboard
    reported_reason: str = ""
    problem: str = ""
    status: dict[str, Any] = field(default_factory=dict)

    # -- one pass -------------------------------------------------------------------------

    async def step(self, pool: Mapping[str, Any]) -> Decision | None:
        spec: AutoscalingSpec = pool["autoscaling"]
        live = await self.kube.get_deployment(self.namespace, pool_specs.deployment_name(self.name))
        if live is None:
            return None  # the pool's reconcile creates it
        live_replicas = int((live.get("spec") or {}).get("replicas") or 0)
        if self.written is not None and live_replicas != self.written:
            self._event(
                "Warning",
                "ScaleOverridden",
                f"replicas were set to {live_replicas} outside the autoscaler; it owns them "
                f"while spec.autoscaling is set and restores {self.written}",
            )
        current = self.written if self.written is not None else live_replicas
        now = self.clock()
        if self.history is None:
            self.history = seed_history(current=current, now=now)
        stats = await self._read(pool)
        now = self.clock()
        decision = decide(
            spec=spec,
            current=current,
            # no answer this pass: hold (never act on an old answer)
            observation=self.observation if stats is not None else None,
            history=self.history,
            now=now,
            stale_after=2 * self.state.config.autoscale_poll_seconds + 15,
        )
        self.history = decision.history
        if stats is None:
            decision = dataclasses.replace(
                decision, reason="EngineUnavailable", message=f"holding: {self.problem}"
            )
        if decision.direction == "down" and stats is not None:
            decision = await self._drain(pool, spec, decision, current)
        if decision.desired != live_replicas:
            await self.kube.scale_deployment(
                self.namespace, pool_specs.deployment_name(self.name), decision.desired
            )
        if (
            decision.direction != "down"
            and stats is not None
            and any(w.get("paused") for w in stats["workers"])
        ):
            await self._resume_leftovers(stats)
        self.written = decision.desired
        await self._report(decision, live, stats)
        await self._tell_engine(pool, spec, decision, live, stats)
        return decision

    async def _read(self, pool: Mapping[str, Any]) -> dict[str, Any] | None:
        try:
            stats = await self.state.engine.wait_pool(
                self.name,
                workflows=pool["workflows"],
                known_queued=self.known_queued,
                wait_seconds=max(1, round(self.state.config.autoscale_poll_seconds)),
            )
        except EngineError as exc:
            self.problem = str(exc)
            self._hold_reason("EngineUnavailable", f"holding replicas: {exc}")
            await asyncio.sleep(min(5.0, self.state.config.autoscale_poll_seconds))
            return None
        self.observation = observation_of(stats, self.clock())
        self.known_queued = int(stats["queued"])
        if stats.get("unknownWorkflows"):
            self._hold_reason(
                "UnknownWorkflows",
                f"the engine knows no workflow {stats['unknownWorkflows']}: their queue is empty",
            )
        return stats

    # -- drain ----------------------------------------------------------------------------

    async def _drain(
        self, pool: Mapping[str, Any], spec: AutoscalingSpec, decision: Decision, current: int
    ) -> Decision:
        """Remove ``current - decision.desired`` Pods that run nothing, or fewer; answers
        the decision actually carried out."""
        started = self.clock()
        selector = pool_specs.pool_selector(self.name)
        deadline = started + spec.drain_timeout_seconds
        victims: list[str] = []
        while True:
            pods = await self.kube.list_pods(self.namespace, selector)
            stats = await self.state.engine.pool_stats(self.name, workflows=pool["workflows"])
            views = pod_views(pods, stats["workers"])
            by_name = {v.name: v for v in views}
            if not victims:
                held = sum(int(w.get("running") or 0) for w in stats["workers"])
                chosen = choose_victims(
                    views,
                    current - decision.desired,
                    unaccounted_running=max(0, int(stats["running"]) - held),
                )
                if not chosen:
                    return self._held(decision, current, "BusyWorkers", "no idle worker to remove")
                victims = [v.name for v in chosen]
            # a victim that registered since, or was resumed, is paused (again); a read
            # from before a pause cannot prove the worker idle (a task may have reached it
            # in between), so only a pass that paused nothing may end the drain
            paused_now = False
            for name in victims:
                view = by_name.get(name)
                if view is not None and view.registered and not view.paused:
                    for worker_id in view.worker_ids:
                        await self.state.engine.set_worker_paused(worker_id, paused=True)
                        paused_now = True
            self.observation = observation_of(stats, self.clock())
            again = decide(
                spec=spec,
                current=current,
                observation=self.observation,
                history=self.history or (),
                now=self.clock(),
                stale_after=60.0,
            )
            self.history = again.history
            if again.direction != "down":
                await self._resume(stats, victims)
                self._event(
                    "Normal", "DrainCancelled", f"new work wants the workers: {again.message}"
                )
                return again
            others_ready = all(v.ready for v in views if v.name not in victims)
            drained = all(by_name[n].running == 0 for n in victims if n in by_name)
            if drained and others_ready and not paused_now:
                break
            if self.clock() > deadline and not paused_now:  # one read after any pause
                await self._resume(stats, victims)
                return self._held(
                    decision,
                    current,
                    "DrainTimeout",
                    f"{'workers still busy' if not drained else 'other pods not ready'} after "
                    f"{spec.drain_timeout_seconds}s; scale-down abandoned",
                )
            await asyncio.sleep(DRAIN_CHECK_SECONDS)
        for name in victims:
            await self.kube.annotate_pod(self.namespace, name, {DELETION_COST: VICTIM_COST})
        drained_for = self.clock() - started
        METRICS.drain_seconds.labels(self.namespace, self.name).observe(drained_for)
        desired = current - len(victims)
        return Decision(
            desired,
            "down",
            decision.reason,
            f"{decision.message}; drained {', '.join(victims)} in {drained_for:.1f}s",
            self.history or decision.history,
        )

    def _held(self, decision: Decision, current: int, reason: str, why: str) -> Decision:
        return Decision(current, "hold", reason, f"{why} ({decision.message})", decision.history)

    async def _resume(
        self, stats: Mapping[str, Any], victims: list[str], *, only_paused: bool = False
    ) -> None:
        """Resume the workers of these Pods (``stats`` may predate the pause we sent)."""
        for w in stats["workers"]:
            if w.get("pod") in victims and (w.get("paused") or not only_paused):
                await self.state.engine.set_worker_paused(str(w["id"]), paused=False)

    async def _resume_leftovers(self, stats: Mapping[str, Any]) -> None:
        """Workers left paused by a drain that did not finish (operator restart, cancel)."""
        pods = await self.kube.list_pods(self.namespace, pool_specs.pool_selector(self.name))
        await self._resume(stats, [v.name for v in pod_views(pods, [])], only_paused=True)

    # -- visibility -----------------------------------------------------------------------

    def _event(self, type_: str, reason: str, message: str) -> None:
        kopf.event(cast(kopf.Body, self.body), type=type_, reason=reason, message=message[:1000])

    def _hold_reason(self, reason: str, message: str) -> None:
        if reason != self.last_reason:
            self._event("Warning", reason, message)
            self.last_reason = reason

    async def _report(
        self, decision: Decision, live: Mapping[str, Any], stats: Mapping[str, Any] | None
    ) -> None:
        labels = (self.namespace, self.name)
        METRICS.desired_replicas.labels(*labels).set(decision.desired)
        METRICS.decisions.labels(*labels, decision.direction, decision.reason).inc()
        status: dict[str, Any] = {
            "desiredReplicas": decision.desired,
            "replicas": int((live.get("status") or {}).get("replicas") or 0),
            "lastDecision": f"{decision.reason}: {decision.message}"[:1000],
        }
        if stats is not None:
            METRICS.queued.labels(*labels).set(int(stats["queued"]))
            METRICS.running.labels(*labels).set(int(stats["running"]))
            status.update(
                queued=int(stats["queued"]),
                running=int(stats["running"]),
                busyWorkers=int(stats["busyWorkers"]),
            )
        if decision.direction != "hold":
            status.update(
                lastScaleTime=now_iso(), lastScaleReason=f"{decision.reason}: {decision.message}"
            )
            self._event("Normal", f"Scaled{decision.direction.capitalize()}", decision.message)
            self.last_reason = decision.reason
        elif decision.reason != self.last_reason:
            kind = "Normal" if decision.reason in ("Steady", "ScaleDownStabilizing") else "Warning"
            self._event(kind, decision.reason, decision.message)
            self.last_reason = decision.reason
        await self._patch_status(status)

    async def _tell_engine(
        self,
        pool: Mapping[str, Any],
        spec: AutoscalingSpec,
        decision: Decision,
        live: Mapping[str, Any],
        stats: Mapping[str, Any] | None,
    ) -> None:
        """The engine's dashboard shows the pool: replicas every pass, and each decision
        (a new reason to hold counts, as it does for Events). A failure only costs the
        dashboard a point: scaling goes on."""
        live_status = live.get("status") or {}
        report: dict[str, Any] = {
            "namespace": self.namespace,
            "workflows": list(pool["workflows"]),
            "autoscaling": True,
            "minReplicas": spec.min_replicas,
            "maxReplicas": spec.max_replicas,
            "desiredReplicas": decision.desired,
            "replicas": int(live_status.get("replicas") or 0),
            "readyReplicas": int(live_status.get("readyReplicas") or 0),
            "reason": f"{decision.reason}: {decision.message}"[:1000],
        }
        if stats is not None:
            report.update(
                queued=int(stats["queued"]),
                running=int(stats["running"]),
                busyWorkers=int(stats["busyWorkers"]),
            )
        if decision.direction != "hold":
            report["decision"] = decision.direction
        elif decision.reason != self.reported_reason:
            report["decision"] = "hold"
        try:
            await self.state.engine.report_pool(self.name, report=report)
        except EngineError as exc:
            log.debug("cannot report %s/%s to the engine: %s", self.namespace, self.name, exc)
            return
        self.reported_reason = decision.reason

    async def _patch_status(self, status: dict[str, Any]) -> None:
        if status != self.status:
            await self.kube.patch_status(
                GROUP, VERSION, "workerpools", self.namespace, self.name, status
            )
            self.status = status

    async def report_problem(self, reason: str, message: str) -> None:
        """A pass failed (engine or Kubernetes): hold, and say why in an Event and status."""
        self._hold_reason(reason, f"holding replicas: {message}")
        status = {**self.status, "lastDecision": f"{reason}: holding replicas: {message}"[:1000]}
        try:
            await self._patch_status(status)
        except KubeError:
            log.warning("cannot write the status of %s/%s", self.namespace, self.name)


async def run_daemon(body: Any, spec: Any, memo: Any, stopped: Any, **_: Any) -> None:
    """The kopf daemon of one WorkerPool (``spec`` is kopf's live view of it)."""
    state: State = memo["state"]
    if state.kube is None:
        return
    meta = body["metadata"]
    scaler: PoolAutoscaler | None = None
    while not stopped:
        try:
            pool = pool_specs.pool_spec(spec)
        except InvalidSpec:
            pool = None  # the pool's reconcile reports it
        if pool is None or pool["autoscaling"] is None:
            if scaler is not None:
                METRICS.forget(meta["namespace"], meta["name"])
            scaler = None
            await stopped.wait(state.config.autoscale_poll_seconds)
            continue
        if scaler is None:
            scaler = PoolAutoscaler(
                state=state,
                kube=state.kube,
                namespace=meta["namespace"],
                name=meta["name"],
                body=body,
            )
        started = time.monotonic()
        try:
            await scaler.step(pool)
        except (EngineError, KubeError) as exc:
            await scaler.report_problem(
                "EngineUnavailable" if isinstance(exc, EngineError) else "KubernetesError",
                str(exc),
            )
            await stopped.wait(min(5.0, state.config.autoscale_poll_seconds))
        spent = time.monotonic() - started
        if spent < MIN_PASS_SECONDS:
            await stopped.wait(MIN_PASS_SECONDS - spent)
    METRICS.forget(meta["namespace"], meta["name"])
