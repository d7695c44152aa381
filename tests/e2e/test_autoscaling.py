"""WorkerPool autoscaling end to end: the operator scales a pool from zero on the first
enqueue, toward its maximum under a burst, and back to zero, draining idle workers so that
no task is interrupted (``autoscale_harness``: emulated API server, pods run as real SDK
workers, killed with SIGKILL when their Pod goes).

Assertions are on outcomes (every task ran exactly once, at attempt 1; the pool returned to
min; no flapping), with generous time limits: the machine is shared.
"""

from __future__ import annotations

import itertools
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from autoscale_harness import NS, World, autoscale_world
from autoscale_workflow import Sleep, define
from e2e_support import Engine

T = TypeVar("T")
WINDOW = 3  # scaleDownStabilizationSeconds
# one long task, enqueued first, keeps a worker busy while the pool scales down after the
# burst: the drain must pick the idle workers around it
LONG_TASK_SECONDS = 15.0
DURATIONS = (0.5, 1.0, 2.0, 3.0, 5.0)
TASKS = 20

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed"),
]


def wait_for(probe: Callable[[], T | None], *, timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
            if last:
                return last
        except Exception as exc:  # the API may answer 404 before the object exists
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: last={last!r}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def world(engine: Engine) -> Iterator[World]:
    with autoscale_world(engine, ready_delay=1.0, poll_seconds=2.0) as w:
        yield w


def pool_body(name: str, workflow: str, mark_dir: Path) -> dict[str, Any]:
    return {
        "apiVersion": "hewer.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "workflows": [workflow],
            "slots": 2,
            "template": {
                "image": "local/test-worker",
                "command": [
                    sys.executable,
                    str(Path(__file__).parent / "workers" / "autoscale_worker.py"),
                ],
                "env": [{"name": "E2E_MARK_DIR", "value": str(mark_dir)}],
            },
            "autoscaling": {
                "minReplicas": 0,
                "maxReplicas": 4,
                "targetPerReplica": 2,
                "activationQueued": 1,
                "scaleUpStabilizationSeconds": 0,
                "scaleDownStabilizationSeconds": WINDOW,
                "maxScaleUpStep": 2,
                "maxScaleDownStep": 1,
                "drainTimeoutSeconds": 60,
            },
        },
    }


def test_burst_scales_from_zero_to_max_and_back_without_interrupting_a_task(
    world: World, engine: Engine
) -> None:
    name = f"scaled-{uuid.uuid4().hex[:6]}"
    workflow_name = f"e2e-autoscale-{uuid.uuid4().hex[:6]}"
    mark_dir = Path(tempfile.mkdtemp(prefix="hewer-e2e-autoscale-marks-"))
    mark_dir.chmod(0o777)
    hatchet = engine.client()
    workflow = define(hatchet, workflow_name)
    hatchet._client.admin.put_workflow(workflow.to_proto())

    world.create_pool(pool_body(name, workflow_name, mark_dir))
    with world.pod_runner(name) as runner:
        # a new pool with an empty queue starts at 0: no Pod starts only to be removed
        wait_for(
            lambda: world.pool(name).get("status", {}).get("desiredReplicas") == 0,
            timeout=60,
            what="status.desiredReplicas 0",
        )
        assert world.apps.read_namespaced_deployment(name, NS).spec.replicas == 0
        history = world.emu.call(
            lambda: [
                (v or {}).get("spec", {}).get("replicas")
                for v in world.emu.emu.objects["apps/v1/deployments", NS, name].history
            ]
        )
        assert set(history) == {0}, history

        enqueued = time.time()
        refs = workflow.run_many(
            [
                workflow.create_bulk_run_item(
                    input=Sleep(seconds=LONG_TASK_SECONDS if i == 0 else DURATIONS[i % 5], n=i)
                )
                for i in range(TASKS)
            ],
            wait_for_result=False,
        )
        first_mark = wait_for(
            lambda: any(mark_dir.iterdir()) and time.time(),
            timeout=90,
            what="the first task to start",
        )
        results = [ref.result() for ref in refs]
        assert sorted(r["work"]["n"] for r in results) == list(range(TASKS))
        reached = runner.max_replicas_seen

        # the pool returns to min once the queue is empty for a window
        wait_for(
            lambda: (
                world.apps.read_namespaced_deployment(name, NS).spec.replicas == 0
                and not world.core.list_namespaced_pod(
                    NS, label_selector=f"hewer.dev/worker-pool={name}"
                ).items
            ),
            timeout=120,
            what="the pool back at 0 replicas",
        )
        status = wait_for(
            lambda: (s := world.pool(name).get("status", {})).get("desiredReplicas") == 0 and s,
            timeout=30,
            what="status.desiredReplicas back to 0",
        )
        timeline = list(runner.replicas)
        changes = runner.direction_changes()

        # the autoscaler owns replicas: scaling the pool by hand does nothing (an Event says
        # why), scaling its Deployment by hand is undone
        world.kubectl("scale", "workerpool", name, "--replicas=3")
        wait_for(
            lambda: "ScaleIgnored" in {e.reason for e in world.events(name)},
            timeout=30,
            what="the ScaleIgnored Event",
        )
        world.kubectl("scale", f"deployment/{name}", "--replicas=2")
        wait_for(
            lambda: "ScaleOverridden" in {e.reason for e in world.events(name)},
            timeout=30,
            what="the ScaleOverridden Event",
        )
        wait_for(
            lambda: world.apps.read_namespaced_deployment(name, NS).spec.replicas == 0,
            timeout=30,
            what="the manual scale undone",
        )

    # every task ran exactly once, at attempt 1: no task was interrupted by a scale-down
    marks = [p.name.split(".") for p in mark_dir.iterdir()]
    attempts = Counter(run_id for run_id, _, _ in marks)
    assert len(attempts) == TASKS and set(attempts.values()) == {1}, attempts
    assert {attempt for _, attempt, _ in marks} == {"1"}
    assert len({pod for _, _, pod in marks}) >= 2, "the burst was served by one pod only"
    # the drain was exercised: a scale-down came while tasks still ran
    ends = [sum(map(float, p.read_text().split())) for p in mark_dir.iterdir()]
    downs = [t for (_, a), (t, b) in itertools.pairwise(timeline) if b < a]
    assert downs and downs[0] < max(ends), (timeline, max(ends))
    # scaled from zero toward max, within bounds
    assert 2 <= reached <= 4, timeline
    # at most one direction change per stabilization window (0.5 s for sampling jitter)
    for before, after in itertools.pairwise(changes):
        assert after[1] - before[0] >= WINDOW - 0.5, timeline
    # visibility: status, Events, metrics
    assert status["queued"] == 0 and status["running"] == 0 and status["busyWorkers"] == 0
    assert status["lastScaleReason"].startswith("Idle")
    reasons = {e.reason for e in world.events(name)}
    assert {"ScaledUp", "ScaledDown"} <= reasons, reasons
    metrics = requests.get(f"http://127.0.0.1:{world.metrics_port}/metrics", timeout=10).text
    decided = [
        line
        for line in metrics.splitlines()
        if line.startswith("hewer_operator_scale_decisions_total{") and f'pool="{name}"' in line
    ]
    assert any('direction="up"' in line for line in decided), decided
    assert any('direction="down"' in line for line in decided), decided
    assert "hewer_operator_drain_seconds_count" in metrics
    print(
        f"\nautoscale e2e: first task started {first_mark - enqueued:.1f}s after the "
        f"first enqueue (0 replicas, 1 s pod start); reached {reached} replicas; "
        f"replica timeline {[(round(t - enqueued, 1), n) for t, n in timeline]}"
    )
    shutil.rmtree(mark_dir, ignore_errors=True)
