"""One autoscaler pass (``pool_autoscaler.PoolAutoscaler.step``) against in-memory fakes of
the engine and the Kubernetes API: holds without a metric, drains before a scale-down, and
cancels the drain when new work arrives."""

from __future__ import annotations

from typing import Any

import pytest

from hewer.operator import pool_autoscaler
from hewer.operator.autoscale import AutoscalingSpec
from hewer.operator.config import OperatorConfig
from hewer.operator.engine_client import EngineUnavailable, _pool_answer
from hewer.operator.handler_common import State
from hewer.operator.pool_drain import DELETION_COST, VICTIM_COST

CONFIG = OperatorConfig(
    engine_url="http://e",
    token="t",
    tenant_id="x",
    grpc_address="e:1",
    public_url="http://e",
    autoscale_poll_seconds=1.0,
)


def stats(queued: int, workers: list[tuple[str, int, bool]]) -> dict[str, Any]:
    return {
        "queued": queued,
        "running": sum(r for _, r, _ in workers),
        "busyWorkers": sum(1 for _, r, _ in workers if r),
        "workers": [
            {"id": f"w-{p}", "pod": p, "running": r, "paused": paused} for p, r, paused in workers
        ],
    }


class FakeEngine:
    def __init__(self, answers: list[Any], *, reports_fail: bool = False) -> None:
        self.answers = answers
        self.calls: list[tuple[str, Any]] = []
        self.reports: list[dict[str, Any]] = []
        self.reports_fail = reports_fail

    def _next(self) -> dict[str, Any]:
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        answer = _pool_answer(answer)
        # the engine remembers pauses: later answers show them
        paused = {w for verb, w in self.calls if verb == "pause"} - {
            w for verb, w in self.calls if verb == "resume"
        }
        workers = [{**w, "paused": w["paused"] or w["id"] in paused} for w in answer["workers"]]
        return {**answer, "workers": workers}

    async def wait_pool(self, pool: str, **_: Any) -> dict[str, Any]:
        return self._next()

    async def pool_stats(self, pool: str, **_: Any) -> dict[str, Any]:
        return self._next()

    async def set_worker_paused(self, worker_id: str, *, paused: bool) -> bool:
        self.calls.append(("pause" if paused else "resume", worker_id))
        return True

    async def report_pool(self, pool: str, *, report: dict[str, Any]) -> None:
        if self.reports_fail:
            raise EngineUnavailable("the dashboard's endpoint is down")
        self.reports.append({"pool": pool, **report})


class FakeKube:
    def __init__(self, replicas: int, pods: list[str]) -> None:
        self.replicas = replicas
        self.pods = pods
        self.calls: list[tuple[str, Any]] = []
        self.status: dict[str, Any] = {}

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any]:
        return {"spec": {"replicas": self.replicas}, "status": {"replicas": self.replicas}}

    async def scale_deployment(self, namespace: str, name: str, replicas: int) -> None:
        self.calls.append(("scale", replicas))
        self.replicas = replicas

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return [{"metadata": {"name": p}, "status": {"phase": "Running"}} for p in self.pods]

    async def annotate_pod(self, namespace: str, name: str, annotations: dict[str, Any]) -> None:
        self.calls.append(("annotate", (name, annotations)))

    async def patch_status(self, *args: Any) -> None:
        self.status = dict(args[-1])


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(
        pool_autoscaler.kopf,
        "event",
        lambda body, *, type, reason, message: seen.append((reason, message)),
    )
    monkeypatch.setattr(pool_autoscaler, "DRAIN_CHECK_SECONDS", 0.0)
    return seen


def scaler(engine: FakeEngine, kube: FakeKube) -> pool_autoscaler.PoolAutoscaler:
    state = State(config=CONFIG, engine=engine, kube=kube)  # type: ignore[arg-type]
    return pool_autoscaler.PoolAutoscaler(
        state=state,
        kube=kube,
        namespace="ns",
        name="p",
        body={},  # type: ignore[arg-type]
    )


POOL = {
    "workflows": ["w"],
    "autoscaling": AutoscalingSpec(
        max_replicas=4, target_per_replica=2, scale_down_stabilization_seconds=0,
        max_scale_down_step=4,
    ),
}  # fmt: skip


async def test_no_answer_or_garbage_holds(events: list[tuple[str, str]]) -> None:
    for answer in (EngineUnavailable("connection refused"), {"queued": "lots"}):
        kube = FakeKube(2, ["a", "b"])
        decision = await scaler(FakeEngine([answer]), kube).step(POOL)
        assert decision is not None and decision.desired == 2 and decision.direction == "hold"
        assert kube.calls == []
        assert kube.status["lastDecision"].startswith("EngineUnavailable: holding")
        assert events[-1][0] == "EngineUnavailable"


async def test_scale_down_drains_idle_workers_only(events: list[tuple[str, str]]) -> None:
    kube = FakeKube(3, ["a", "b", "c"])
    engine = FakeEngine([stats(0, [("a", 0, False), ("b", 1, False), ("c", 0, False)])])
    decision = await scaler(engine, kube).step(POOL)
    assert decision is not None and (decision.desired, decision.direction) == (1, "down")
    assert sorted(engine.calls) == [("pause", "w-a"), ("pause", "w-c")]
    assert kube.calls == [
        ("annotate", ("a", {DELETION_COST: VICTIM_COST})),
        ("annotate", ("c", {DELETION_COST: VICTIM_COST})),
        ("scale", 1),
    ]
    assert kube.status["desiredReplicas"] == 1 and kube.status["busyWorkers"] == 1
    assert ("ScaledDown" in {r for r, _ in events}) and "drained a, c" in events[-1][1]
    # the engine's dashboard hears of the decision
    report = engine.reports[-1]
    assert (report["pool"], report["namespace"], report["decision"]) == ("p", "ns", "down")
    assert (report["desiredReplicas"], report["replicas"], report["busyWorkers"]) == (1, 3, 1)
    assert report["autoscaling"] and report["maxReplicas"] == 4


async def test_reports_to_the_engine_name_each_new_hold_once_and_never_stop_scaling(
    events: list[tuple[str, str]],
) -> None:
    kube = FakeKube(1, ["a"])
    engine = FakeEngine([stats(1, [("a", 1, False)])])  # two tasks: one replica is right
    s = scaler(engine, kube)
    await s.step(POOL)
    await s.step(POOL)
    assert [r.get("decision") for r in engine.reports] == ["hold", None]
    failing = FakeEngine([stats(20, [("a", 1, False)])], reports_fail=True)
    decision = await scaler(failing, FakeKube(1, ["a"])).step(POOL)
    assert decision is not None and decision.direction == "up"


async def test_new_work_mid_drain_resumes_the_victims(events: list[tuple[str, str]]) -> None:
    kube = FakeKube(2, ["a", "b"])
    engine = FakeEngine(
        [
            stats(0, [("a", 0, False), ("b", 1, False)]),  # the pass: a is idle, one fewer
            stats(6, [("a", 0, False), ("b", 1, False)]),  # while draining: new work
        ]
    )
    decision = await scaler(engine, kube).step(POOL)
    assert decision is not None and decision.direction == "up"
    assert engine.calls == [("pause", "w-a"), ("resume", "w-a")]
    assert ("scale", 1) not in kube.calls and kube.replicas >= 2
    assert "DrainCancelled" in {r for r, _ in events}


async def test_a_drain_that_times_out_resumes_and_holds(events: list[tuple[str, str]]) -> None:
    pool = {
        "workflows": ["w"],
        "autoscaling": AutoscalingSpec(
            max_replicas=4, target_per_replica=2, scale_down_stabilization_seconds=0,
            drain_timeout_seconds=0,
        ),
    }  # fmt: skip
    kube = FakeKube(3, ["a", "b", "c"])
    idle_a = stats(0, [("a", 0, False), ("b", 1, False), ("c", 0, False)])
    busy_a = stats(0, [("a", 1, False), ("b", 1, False), ("c", 0, False)])
    # the pass and the drain's first read see a and c idle; then a task reaches a (it was
    # assigned before the pause): still fewer workers wanted, but a cannot go
    engine = FakeEngine([idle_a, idle_a, busy_a])
    decision = await scaler(engine, kube).step(pool)
    assert decision is not None and (decision.desired, decision.reason) == (3, "DrainTimeout")
    assert engine.calls == [("pause", "w-a"), ("resume", "w-a")]  # one step: one victim
    assert kube.calls == []  # nothing marked, nothing removed
    assert kube.status["lastDecision"].startswith("DrainTimeout: workers still busy")
