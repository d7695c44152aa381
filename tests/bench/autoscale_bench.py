"""WorkerPool autoscaling benchmark (a script, not a test).

    .venv/bin/python tests/bench/autoscale_bench.py [--cycles 3] [--burst 40] [--max 4]

Runs the e2e test's world (``tests/e2e/autoscale_harness.py``): a fresh ``hewer dev``,
the emulated API server with a 1 s pod start, ``hewer operator`` and a pod runner that
runs every Pod as an official-SDK worker process. It prints:

1. scale from zero, ``--cycles`` times: first enqueue -> Deployment replicas > 0 (the
   operator's reaction) -> Pod running -> worker registered -> first task started;
2. a burst of ``--burst`` 2-second tasks: first enqueue -> replicas at max;
3. drains: how long each scale-down's drain took (the operator's ScaledDown Events), and
   burst end -> back at 0;

beside KEDA's defaults (30 s polling, 300 s cooldown, HPA 15 s sync), derived from its
documented behaviour (see tests/bench/README.md).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

HERE = Path(__file__).resolve().parent
E2E = HERE.parent / "e2e"
for p in (E2E, E2E / "workers", HERE.parent):
    sys.path.insert(0, str(p))

import requests  # noqa: E402
from autoscale_harness import NS, WORKER, World, autoscale_world  # noqa: E402
from autoscale_workflow import Sleep, define  # noqa: E402
from e2e_support import start_engine  # noqa: E402

T = TypeVar("T")
POD_START = 1.0


def wait_for(probe: Callable[[], T | None], *, timeout: float, step: float = 0.02) -> T:
    deadline = time.monotonic() + timeout
    while True:
        with_value = None
        try:
            with_value = probe()
        except Exception:
            with_value = None
        if with_value:
            return with_value
        if time.monotonic() > deadline:
            raise TimeoutError("timed out")
        time.sleep(step)


def pool_body(name: str, workflow: str, marks: Path, maximum: int) -> dict[str, Any]:
    return {
        "apiVersion": "hewer.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "workflows": [workflow],
            "slots": 2,
            "template": {
                "image": "local/bench-worker",
                "command": [sys.executable, str(WORKER)],
                "env": [{"name": "E2E_MARK_DIR", "value": str(marks)}],
            },
            "autoscaling": {
                "minReplicas": 0,
                "maxReplicas": maximum,
                "targetPerReplica": 2,
                "scaleDownStabilizationSeconds": 3,
                "maxScaleUpStep": maximum,
                "maxScaleDownStep": maximum,
                "drainTimeoutSeconds": 60,
            },
        },
    }


def replicas(world: World, name: str) -> int:
    return int(world.apps.read_namespaced_deployment(name, NS).spec.replicas or 0)


def running_pod(world: World, name: str) -> bool:
    pods = world.core.list_namespaced_pod(NS, label_selector=f"hewer.dev/worker-pool={name}")
    return any(p.status.phase == "Running" for p in pods.items)


def registered(world: World, name: str, workflow: str) -> bool:
    r = world.engine.rest(
        "GET",
        f"/api/v1/hewer/tenants/{world.engine.tenant_of()}/worker-pools/{name}/stats"
        f"?workflow={workflow}",
    )
    return bool(r.status_code == 200 and r.json()["workers"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--burst", type=int, default=40)
    parser.add_argument("--max", type=int, default=4)
    args = parser.parse_args()

    with start_engine() as engine, autoscale_world(engine, ready_delay=POD_START) as world:
        name, wf_name = "bench-pool", f"bench-autoscale-{uuid.uuid4().hex[:6]}"
        marks = Path(tempfile.mkdtemp(prefix="hewer-bench-autoscale-"))
        marks.chmod(0o777)
        hatchet = engine.client()
        workflow = define(hatchet, wf_name)
        hatchet._client.admin.put_workflow(workflow.to_proto())
        world.create_pool(pool_body(name, wf_name, marks, args.max))
        wait_for(lambda: world.pool(name).get("status", {}).get("desiredReplicas") == 0, timeout=60)

        print(f"scale from zero (1 task, {POD_START:.0f} s emulated pod start):")
        firsts: list[float] = []
        with world.pod_runner(name):
            for cycle in range(args.cycles):
                wait_for(
                    lambda: replicas(world, name) == 0 and not running_pod(world, name), timeout=120
                )
                before = set(marks.iterdir())
                t0 = time.monotonic()
                workflow.run(Sleep(seconds=0.1, n=cycle), wait_for_result=False)
                t_scale = wait_for(
                    lambda: replicas(world, name) > 0 and time.monotonic(), timeout=60
                )
                t_pod = wait_for(lambda: running_pod(world, name) and time.monotonic(), timeout=60)
                t_reg = wait_for(
                    lambda: registered(world, name, wf_name) and time.monotonic(), timeout=60
                )
                t_task = wait_for(
                    lambda seen=before: set(marks.iterdir()) - seen and time.monotonic(), timeout=60
                )
                firsts.append(t_task - t0)
                print(
                    f"  cycle {cycle + 1}: replicas>0 {t_scale - t0:5.2f} s | pod running "
                    f"{t_pod - t0:5.2f} s | worker registered {t_reg - t0:5.2f} s | "
                    f"first task started {t_task - t0:5.2f} s"
                )
            wait_for(lambda: replicas(world, name) == 0, timeout=120)
            print(
                f"  first task started after: median {statistics.median(firsts):.2f} s, "
                f"max {max(firsts):.2f} s (target <= 5 s)"
            )

            print(f"burst of {args.burst} two-second tasks, max {args.max} replicas x 2 slots:")
            t0 = time.monotonic()
            refs = workflow.run_many(
                [
                    workflow.create_bulk_run_item(input=Sleep(seconds=2.0, n=i))
                    for i in range(args.burst)
                ],
                wait_for_result=False,
            )
            t_max = wait_for(
                lambda: replicas(world, name) >= args.max and time.monotonic(), timeout=120
            )
            for ref in refs:
                ref.result()
            t_done = time.monotonic()
            t_zero = wait_for(lambda: replicas(world, name) == 0 and time.monotonic(), timeout=300)
            print(f"  first enqueue -> {args.max} replicas: {t_max - t0:.2f} s")
            print(
                f"  all {args.burst} done: {t_done - t0:.2f} s; "
                f"last result -> 0 replicas: {t_zero - t_done:.2f} s"
            )

        drains = [
            float(m.group(1))
            for e in world.events(name)
            if e.reason == "ScaledDown" and (m := re.search(r"in ([0-9.]+)s$", e.message or ""))
        ]
        if drains:
            print(
                f"  drains: {len(drains)}, median {statistics.median(drains):.2f} s, "
                f"max {max(drains):.2f} s (idle workers: pause, check, mark, scale)"
            )
        metrics = requests.get(f"http://127.0.0.1:{world.metrics_port}/metrics", timeout=10).text
        decisions = re.findall(
            r'^hewer_operator_scale_decisions_total\{.*direction="(\w+)".*reason="(\w+)"\} (\S+)',
            metrics,
            re.MULTILINE,
        )
        print(
            "  operator decisions that scaled: "
            + ", ".join(f"{d} {r} x{float(n):.0f}" for d, r, n in decisions if d != "hold")
        )
        print("KEDA defaults for comparison (from its documented behaviour):")
        print("  scale from zero: up to 30 s polling (15 s on average) + pod start + worker start")
        print("  1 -> N: HPA sync every 15 s, max(4 pods, 100 %) per step")
        print("  back to zero: >= 300 s cooldown after the last active poll; N -> 1 >= 300 s")
        print("  scale-down victims: chosen by the ReplicaSet, busy workers included")
    return 0


if __name__ == "__main__":
    sys.exit(main())
