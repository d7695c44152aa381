"""Scheduler benchmark: concurrency keys under two engine replicas (a script, not a test).

    .venv/bin/python tests/bench/bench_scheduler.py [--tasks 10000] [--keys 1000]

World: ``hewer dev`` (engine A, embedded PostgreSQL) and ``hewer serve`` (engine B) with
``HEWER_DATABASE_URL`` set to A's embedded database, so two replicas share one database. Four
lean protocol-level workers (two per engine) serve ``bench-sched``: one task whose
concurrency is ``GROUP_ROUND_ROBIN``, ``max_runs=1``, key ``input.key``. The load generator
triggers ``--tasks`` runs over ``--keys`` keys, alternating bulk chunks between the two
engines, and waits for every result. It prints:

* assignments/s: tasks admitted and assigned per second, from the first trigger to the last
  ``assigned_at`` in the database;
* queue-to-start p50/p95/p99: ``tasks.created_at`` -> ``tasks.assigned_at``;
* the largest number of runs ever running at once for one key, from the workers' own
  records: a worker stamps a task when it receives the assignment and again *before* it sends
  COMPLETED, so the engine cannot have freed the key before the end stamp; with ``max_runs=1``
  the answer must be 1 (exit status 1 otherwise).

Reuses bench.py's harness (process spawning, clean-up, the result streams). See
tests/bench/README.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# as in bench.py: set before grpc is imported; bench.py is imported from its own directory
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import argparse
import asyncio
import collections
import json
import signal
import time
from typing import Any

import asyncpg
import grpc
from hatchet_sdk.contracts import dispatcher_pb2 as dpb
from hatchet_sdk.contracts import dispatcher_pb2_grpc, workflows_pb2
from hatchet_sdk.contracts.v1 import workflows_pb2 as v1pb
from hatchet_sdk.contracts.v1 import workflows_pb2_grpc as v1grpc
from hatchet_sdk.contracts.v1.shared import trigger_pb2

import bench

WORKFLOW = "bench-sched"
ACTION = "bench-sched:work"
SCRIPT = str(Path(__file__).resolve())


def sched_workflow(max_runs: int) -> Any:
    task = v1pb.CreateTaskOpts(
        readable_id="work",
        action=ACTION,
        timeout="120s",
        schedule_timeout="10m",
        inputs="{}",
        retries=0,
        slot_requests={"default": 1},
        concurrency=[
            v1pb.Concurrency(
                expression="input.key", max_runs=max_runs, limit_strategy=v1pb.GROUP_ROUND_ROBIN
            )
        ],
    )
    return v1pb.CreateWorkflowVersionRequest(
        name=WORKFLOW, description="hewer scheduler bench", version="", tasks=[task]
    )


# --------------------------------------------------------------------------------------------
# role: lean worker that records (key, received, finished) per task


async def worker_main(
    host: str, token: str, slots: int, senders: int, work_ms: float, records: str
) -> None:
    md = bench._metadata(token)
    channel = grpc.aio.insecure_channel(host, options=bench.CHANNEL_OPTIONS)
    disp = dispatcher_pb2_grpc.DispatcherStub(channel)  # type: ignore[attr-defined]
    reg = await disp.Register(
        dpb.WorkerRegisterRequest(
            worker_name=f"bench-sched-worker-{os.getpid()}",
            actions=[ACTION],
            services=["default"],
            slot_config={"default": slots},
            runtime_info=dpb.RuntimeInfo(
                sdk_version="hewer-bench", language=dpb.PYTHON, language_version="3", os="linux"
            ),
        ),
        metadata=md,
        timeout=30,
    )
    worker_id = reg.worker_id
    queue: asyncio.Queue[tuple[Any, float]] = asyncio.Queue()
    counts = collections.Counter[str]()
    # (task id, key, received, finished) in wall-clock seconds: the other workers and the
    # database share this host's clock
    done: list[tuple[str, str, float, float]] = []
    stop = asyncio.Event()

    async def listen() -> None:
        while not stop.is_set():
            try:
                stream = disp.ListenV2(dpb.WorkerListenRequest(worker_id=worker_id), metadata=md)
                async for action in stream:
                    if action.action_type == dpb.START_STEP_RUN:
                        counts["assigned"] += 1
                        queue.put_nowait((action, time.time()))
            except grpc.aio.AioRpcError as exc:
                counts["listen_errors"] += 1
                print(f"worker: ListenV2 ended: {exc.code()} {exc.details()}", file=sys.stderr)
            await asyncio.sleep(0.5)

    async def send() -> None:
        while True:
            a, received = await queue.get()
            key = json.loads(a.action_payload)["input"]["key"]
            if work_ms > 0:
                await asyncio.sleep(work_ms / 1000)
            # stamped before COMPLETED leaves: the engine frees the key only after it
            done.append((a.task_run_external_id, key, received, time.time()))
            event = bench.completed_event(worker_id, a)
            for attempt in range(5):
                try:
                    await disp.SendStepActionEvent(event, metadata=md, timeout=60)
                    counts["completed"] += 1
                    break
                except grpc.aio.AioRpcError as exc:
                    counts["send_errors"] += 1
                    print(f"worker: send failed: {exc.code()} {exc.details()}", file=sys.stderr)
                    await asyncio.sleep(0.1 * (attempt + 1))

    async def heartbeat() -> None:
        while True:
            try:
                await disp.Heartbeat(
                    dpb.HeartbeatRequest(worker_id=worker_id, heartbeat_at=bench._now_ts()),
                    metadata=md,
                    timeout=5,
                )
            except grpc.aio.AioRpcError:
                counts["heartbeat_errors"] += 1
            await asyncio.sleep(4)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(listen()), asyncio.create_task(heartbeat())]
    tasks += [asyncio.create_task(send()) for _ in range(senders)]
    print(f"READY {worker_id}", flush=True)
    await stop.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await channel.close(grace=1)
    payload = json.dumps({"counts": dict(counts), "tasks": done})
    await asyncio.to_thread(Path(records).write_text, payload)


# --------------------------------------------------------------------------------------------
# measurements


def max_running_per_key(intervals: list[tuple[str, float, float]]) -> tuple[int, str]:
    """Largest number of overlapping (received, finished) intervals of one key, and the key.

    An end and a start at the same instant do not overlap (end events sort first).
    """
    events: dict[str, list[tuple[float, int]]] = collections.defaultdict(list)
    for key, start, end in intervals:
        events[key] += [(start, 1), (end, -1)]
    best, best_key = 0, ""
    for key, evs in events.items():
        running = 0
        for _, delta in sorted(evs, key=lambda e: (e[0], e[1])):
            running += delta
            if running > best:
                best, best_key = running, key
    return best, best_key


def percentile(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


async def trigger_all(
    engines: list[bench.Load], n: int, keys: int, chunk: int
) -> tuple[list[asyncio.Future[float]], int]:
    """Trigger n runs (key i % keys), chunks alternating between engines; watch results on A."""
    futures: list[asyncio.Future[float]] = []
    errors = 0
    sent = 0
    i = 0
    while sent < n:
        size = min(chunk, n - sent)
        req = workflows_pb2.BulkTriggerWorkflowRequest(
            workflows=[
                trigger_pb2.TriggerWorkflowRequest(
                    name=WORKFLOW,
                    input=json.dumps({"key": f"k{(sent + j) % keys:04d}"}),
                    additional_metadata="{}",
                )
                for j in range(size)
            ]
        )
        load = engines[i % len(engines)]
        i += 1
        try:
            resp = await load.wf.BulkTriggerWorkflow(req, metadata=load.md, timeout=60)
        except grpc.aio.AioRpcError as exc:
            errors += 1
            print(f"  bulk trigger failed: {exc.code()} {exc.details()}", file=sys.stderr)
            if errors > 5:
                break
            await asyncio.sleep(0.5)
            continue
        futures += [engines[0].results.watch(run_id) for run_id in resp.workflow_run_ids]
        sent += size
    return futures, errors


async def db_timings(dsn: str, since: float) -> tuple[list[float], float, int]:
    """(created->assigned seconds per task, last assigned_at epoch, tasks assigned)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT extract(epoch FROM t.created_at)::float8 AS created,"
            " extract(epoch FROM t.assigned_at)::float8 AS assigned"
            " FROM tasks t WHERE t.action_id = $1 AND t.created_at >= to_timestamp($2)",
            ACTION,
            since,
        )
    finally:
        await conn.close()
    assigned = [r for r in rows if r["assigned"] is not None]
    waits = [r["assigned"] - r["created"] for r in assigned]
    last = max((r["assigned"] for r in assigned), default=since)
    return waits, last, len(assigned)


# --------------------------------------------------------------------------------------------
# the orchestrating process


async def run(args: argparse.Namespace, h: bench.Harness) -> int:
    env = bench.child_env()
    env["HEWER_LOG_LEVEL"] = args.engine_log_level
    bench.print_machine()

    dev = await bench.start_dev_engine(h, env=env, name="engine-a")
    engine_a, dsn = dev.proc, dev.dsn
    env_b = {**env, "HEWER_DATABASE_URL": dsn}
    grpc_port_b = bench._free_port()
    engine_b = h.spawn(
        "engine-b",
        [
            *(str(bench.HEWER), "serve"),
            *("--grpc-port", str(grpc_port_b), "--http-port", str(bench._free_port())),
        ],
        env=env_b,
        stdout_pipe=True,
    )
    client_env_b = await asyncio.to_thread(bench.read_env_lines, engine_b, 90)
    token = client_env_b["HATCHET_CLIENT_TOKEN"]  # both replicas share the signing secret
    hosts = [dev.host, f"localhost:{grpc_port_b}"]
    print(f"engines ready: A (hewer dev) {hosts[0]}, B (hewer serve) {hosts[1]}", flush=True)

    loads = [bench.Load(host, token, 1) for host in hosts]
    await loads[0].start()
    admin = v1grpc.AdminServiceStub(loads[0].channel)
    await admin.PutWorkflow(sched_workflow(args.max_runs), metadata=loads[0].md, timeout=30)

    worker_env = bench.child_env()
    workers: list[tuple[bench.Proc, Path]] = []
    for i in range(args.workers):
        records = h.tmp / f"worker-{i}.json"
        proc = h.spawn(
            f"worker-{i}",
            [
                *(sys.executable, SCRIPT, "--role", "worker", "--host", hosts[i % 2]),
                *("--token", token, "--records", str(records)),
                *("--slots", str(args.slots), "--senders", str(args.senders)),
                *("--work-ms", str(args.work_ms)),
            ],
            env=worker_env,
            stdout_pipe=True,
        )
        workers.append((proc, records))
    for proc, _ in workers:
        await asyncio.to_thread(bench.read_ready, proc, 60)
    print(
        f"{args.workers} lean workers ({args.slots} slots, {args.senders} senders, "
        f"{args.work_ms:g} ms of work per task), alternately on A and B; "
        f"{args.tasks} runs over {args.keys} keys, GROUP_ROUND_ROBIN max_runs={args.max_runs}",
        flush=True,
    )

    mon_pg = bench.MemoryMonitor(engine_a.popen.pid, dev.pg_dir / "postmaster.pid")
    cpu0 = [bench.tree_cpu(e.popen.pid) for e in (engine_a, engine_b)]
    pg0 = mon_pg.cpu()[1]
    since = time.time() - 1.0  # database timestamps may be a little behind ours
    t_wall0, t0 = time.time(), time.perf_counter()
    try:
        futures, trigger_errors = await trigger_all(loads, args.tasks, args.keys, args.chunk)
        t_triggered = time.perf_counter() - t0
        if futures:
            await asyncio.wait(futures, timeout=args.timeout)
        results = [f.result() for f in futures if f.done() and not f.cancelled()]
        for f in futures:
            f.cancel()
        wall = (max(results) if results else time.perf_counter()) - t0
    finally:
        for load in loads:
            await load.close()
    cpu1 = [bench.tree_cpu(e.popen.pid) for e in (engine_a, engine_b)]
    pg1 = mon_pg.cpu()[1]
    waits, last_assigned, n_assigned = await db_timings(dsn, since)

    intervals: list[tuple[str, float, float]] = []
    counts: collections.Counter[str] = collections.Counter()
    per_worker: list[int] = []
    for proc, records in workers:
        h.stop(proc)
        data = json.loads(records.read_text())
        counts.update(data["counts"])
        per_worker.append(len(data["tasks"]))
        intervals += [(key, start, end) for _, key, start, end in data["tasks"]]
    peak, peak_key = max_running_per_key(intervals)
    keys_seen = len({k for k, _, _ in intervals})

    n = args.tasks
    assign_span = last_assigned - t_wall0
    print(f"\ntriggered {n} runs in {t_triggered:.1f}s ({trigger_errors} trigger errors)")
    print(f"  results received          {len(results):>8} of {n} in {wall:.1f}s")
    print(f"  runs/s (trigger -> result) {len(results) / wall if wall > 0 else 0:>8.1f}")
    print(
        f"  assignments/s              {n_assigned / assign_span if assign_span > 0 else 0:>8.1f}"
        f"  ({n_assigned} assigned; first trigger -> last assigned_at {assign_span:.1f}s)"
    )
    print(
        "  queue-to-start (created -> assigned) "
        f"p50 {1000 * percentile(waits, 50):.0f} ms, p95 {1000 * percentile(waits, 95):.0f} ms, "
        f"p99 {1000 * percentile(waits, 99):.0f} ms"
    )
    print(
        f"  max running at once per key {peak:>7}  (key {peak_key}; {len(intervals)} worker "
        f"records over {keys_seen} keys; per worker {per_worker})"
    )
    print(
        f"  CPU s: engine A {cpu1[0] - cpu0[0]:.1f}, engine B {cpu1[1] - cpu0[1]:.1f}, "
        f"postgres {pg1 - pg0:.1f}"
    )
    print(f"  worker counters: {dict(counts)}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        out = {
            "tasks": n,
            "keys": args.keys,
            "results": len(results),
            "wall_s": wall,
            "assigned": n_assigned,
            "assignments_per_s": n_assigned / assign_span if assign_span > 0 else 0,
            "queue_to_start_p50_ms": 1000 * percentile(waits, 50),
            "queue_to_start_p95_ms": 1000 * percentile(waits, 95),
            "max_running_per_key": peak,
        }
        await asyncio.to_thread(Path(args.json).write_text, json.dumps(out, indent=2))
    ok = len(results) == n and peak <= args.max_runs and len(intervals) >= n
    if peak > args.max_runs:
        print(f"FAIL: key {peak_key} had {peak} runs at once (max_runs={args.max_runs})")
    return 0 if ok else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tasks", type=int, default=10000, help="runs to trigger")
    p.add_argument("--keys", type=int, default=1000, help="distinct concurrency keys")
    p.add_argument(
        "--max-runs",
        type=int,
        default=1,
        help="max_runs per key (2 shows that the overlap measurement sees overlaps)",
    )
    p.add_argument("--workers", type=int, default=4, help="lean workers (alternately A and B)")
    p.add_argument("--slots", type=int, default=500, help="slots per worker")
    p.add_argument("--senders", type=int, default=32, help="concurrent senders per worker")
    p.add_argument(
        "--work-ms", type=float, default=10.0, help="simulated work per task (asyncio.sleep)"
    )
    p.add_argument("--chunk", type=int, default=500, help="runs per BulkTriggerWorkflow")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for results")
    p.add_argument("--engine-log-level", default="WARNING")
    p.add_argument("--json", metavar="FILE", default=None, help="also write figures as JSON")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    # internal: worker role
    p.add_argument("--role", choices=["bench", "worker"], default="bench", help=argparse.SUPPRESS)
    p.add_argument("--host", default="", help=argparse.SUPPRESS)
    p.add_argument("--token", default="", help=argparse.SUPPRESS)
    p.add_argument("--records", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.chunk = max(1, min(1000, args.chunk))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "worker":
        asyncio.run(
            worker_main(args.host, args.token, args.slots, args.senders, args.work_ms, args.records)
        )
        return 0
    # workers first, then engine B, then engine A (which stops the embedded PostgreSQL)
    return bench.run_with_harness(run, args, prefix="hewer-bench-sched-", keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
