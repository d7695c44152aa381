"""Many workers: what 500 connected, heartbeating workers cost (a script, not a test).

    .venv/bin/python tests/bench/workers_bench.py [--workers 500] [--period 60] [--tasks 2000]

A fresh ``hewer dev`` (bench.py's harness) and one simulator process (grpc.aio,
``hatchet_sdk.contracts`` stubs): ``--workers`` workers, one channel each, two actions and a
slot config each, one ``ListenV2`` stream each, a ``Heartbeat`` every 4 s each (phases spread
over the 4 s); ``--task-workers`` of them also serve ``wb-noop:noop``. Phases: idle floor,
registration, ``--period`` s of heartbeats only (engine + PostgreSQL CPU as % of one core
against the 10 % target, simulator excluded; heartbeat RPC p50/p99), then ``--tasks`` no-op
runs while the heartbeats go on (``--workers 1 --slots 500`` for the one-worker comparison).
Lock waits are sampled all along (lock_sampler.py). Exit status 1 when the budget is
exceeded, a lock wait on ``workers`` was seen, or runs are missing. See tests/bench/README.md.
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
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
from hatchet_sdk.contracts import dispatcher_pb2 as dpb
from hatchet_sdk.contracts import dispatcher_pb2_grpc
from hatchet_sdk.contracts.v1 import workflows_pb2 as v1pb
from hatchet_sdk.contracts.v1 import workflows_pb2_grpc as v1grpc
from lock_sampler import LockSampler

import bench

SCRIPT = str(Path(__file__).resolve())
NOOP_WORKFLOW = "wb-noop"
NOOP_ACTION = "wb-noop:noop"
HEARTBEAT_EVERY = 4.0  # seconds, as the SDKs
BUDGET_PCT = 10.0  # engine + PostgreSQL, % of one core, for the heartbeat phase


def noop_workflow() -> Any:
    return v1pb.CreateWorkflowVersionRequest(
        name=NOOP_WORKFLOW,
        description="hewer workers bench no-op",
        version="",
        tasks=[bench._task("noop", NOOP_ACTION)],
    )


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


# --------------------------------------------------------------------------------------------
# role: simulator (its own process). Reads commands on stdin: MEASURE resets the heartbeat
# latencies, REPORT prints them as JSON, STOP ends.


@dataclass
class SimWorker:
    index: int
    channel: grpc.aio.Channel
    stub: Any
    worker_id: str = ""
    serves_tasks: bool = False


@dataclass
class SimStats:
    latencies: list[float] = field(default_factory=list)
    counts: collections.Counter[str] = field(default_factory=collections.Counter)


async def sim_main(args: argparse.Namespace) -> None:
    token = os.environ["HATCHET_CLIENT_TOKEN"]
    md = bench._metadata(token)
    admin_channel = grpc.aio.insecure_channel(args.host, options=bench.CHANNEL_OPTIONS)
    await v1grpc.AdminServiceStub(admin_channel).PutWorkflow(
        noop_workflow(), metadata=md, timeout=30
    )
    stats = SimStats()
    stop = asyncio.Event()
    workers: list[SimWorker] = []
    for i in range(args.workers):
        channel = grpc.aio.insecure_channel(args.host, options=bench.CHANNEL_OPTIONS)
        workers.append(
            SimWorker(
                index=i,
                channel=channel,
                stub=dispatcher_pb2_grpc.DispatcherStub(channel),  # type: ignore[attr-defined]
                serves_tasks=i < args.task_workers,
            )
        )

    async def register(w: SimWorker) -> None:
        actions = [f"wb-idle-{w.index % 7}:a", f"wb-idle-{w.index % 7}:b"]
        if w.serves_tasks:
            actions.append(NOOP_ACTION)
        reg = await w.stub.Register(
            dpb.WorkerRegisterRequest(
                worker_name=f"wb-worker-{w.index}",
                actions=actions,
                services=["default"],
                slot_config={"default": args.slots},
                runtime_info=dpb.RuntimeInfo(
                    sdk_version="hewer-workers-bench",
                    language=dpb.PYTHON,
                    language_version="3",
                    os="linux",
                ),
            ),
            metadata=md,
            timeout=60,
        )
        w.worker_id = reg.worker_id

    async def complete(w: SimWorker, a: Any) -> None:
        event = bench.completed_event(w.worker_id, a)
        try:
            await w.stub.SendStepActionEvent(event, metadata=md, timeout=60)
            stats.counts["completed"] += 1
        except grpc.aio.AioRpcError as exc:
            stats.counts["send_errors"] += 1
            print(f"sim: send: {exc.code()} {exc.details()}", file=sys.stderr)

    async def listen(w: SimWorker) -> None:
        pending: set[asyncio.Task[None]] = set()
        while not stop.is_set():
            try:
                stream = w.stub.ListenV2(
                    dpb.WorkerListenRequest(worker_id=w.worker_id), metadata=md
                )
                async for action in stream:
                    if action.action_type == dpb.START_STEP_RUN:
                        stats.counts["assigned"] += 1
                        t = asyncio.create_task(complete(w, action))
                        pending.add(t)
                        t.add_done_callback(pending.discard)
            except grpc.aio.AioRpcError as exc:
                if stop.is_set():
                    return
                stats.counts["listen_errors"] += 1
                print(f"sim: ListenV2 {w.index}: {exc.code()} {exc.details()}", file=sys.stderr)
            await asyncio.sleep(1.0)

    async def heartbeat(w: SimWorker, first: float) -> None:
        due = first
        while not stop.is_set():
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            t0 = time.perf_counter()
            try:
                await w.stub.Heartbeat(
                    dpb.HeartbeatRequest(worker_id=w.worker_id, heartbeat_at=bench._now_ts()),
                    metadata=md,
                    timeout=10,
                )
                stats.latencies.append(time.perf_counter() - t0)
                stats.counts["heartbeats"] += 1
            except grpc.aio.AioRpcError as exc:
                stats.counts["heartbeat_errors"] += 1
                print(f"sim: heartbeat {w.index}: {exc.code()} {exc.details()}", file=sys.stderr)
            due += HEARTBEAT_EVERY
            # a late beat does not make the next ones bunch up
            due = max(due, time.monotonic())

    # registration: as many at once as a fleet starting together would, bounded
    gate = asyncio.Semaphore(args.register_concurrency)

    async def register_and_listen(w: SimWorker) -> asyncio.Task[None]:
        async with gate:
            await register(w)
        return asyncio.create_task(listen(w))

    t0 = time.perf_counter()
    listeners = await asyncio.gather(*(register_and_listen(w) for w in workers))
    print(f"REGISTERED {time.perf_counter() - t0:.3f}", flush=True)
    start = time.monotonic()
    beaters = [
        asyncio.create_task(heartbeat(w, start + HEARTBEAT_EVERY * w.index / len(workers)))
        for w in workers
    ]

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while not stop.is_set():
        line = (await reader.readline()).decode().strip()
        if line == "MEASURE":
            stats.latencies.clear()
            stats.counts["heartbeats"] = 0
        elif line == "REPORT":
            lat = stats.latencies
            print(
                "REPORT "
                + json.dumps(
                    {
                        "n": len(lat),
                        "p50_ms": 1000 * pct(lat, 50),
                        "p99_ms": 1000 * pct(lat, 99),
                        "max_ms": 1000 * max(lat, default=float("nan")),
                        "counts": dict(stats.counts),
                    }
                ),
                flush=True,
            )
        elif line in ("STOP", ""):
            break
    stop.set()
    for t in [*beaters, *listeners]:
        t.cancel()
    await asyncio.gather(*beaters, *listeners, return_exceptions=True)
    await asyncio.gather(*(w.channel.close(grace=0.5) for w in workers), return_exceptions=True)
    await admin_channel.close(grace=0.5)


def backend_cpu(pid: int) -> float:
    return bench.tree_cpu(pid) if pid else 0.0


# --------------------------------------------------------------------------------------------
# the orchestrating process


class Sim:
    def __init__(self, proc: bench.Proc) -> None:
        self.proc = proc

    def send(self, line: str) -> None:
        assert self.proc.popen.stdin is not None
        self.proc.popen.stdin.write(f"{line}\n".encode())
        self.proc.popen.stdin.flush()

    def read_tagged(self, tag: str, timeout: float) -> str:
        assert self.proc.popen.stdout is not None
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            line = self.proc.popen.stdout.readline().decode()
            if not line:
                break
            if line.startswith(tag + " "):
                return line[len(tag) + 1 :].strip()
        raise RuntimeError(f"simulator gave no {tag}:\n{bench.tail(self.proc.log_path)}")


def start_profiler(directory: str | None, pid: int) -> tuple[Any, Path | None]:
    """py-spy on the engine for the heartbeat phase (its own samples cost the engine little:
    it reads the process's memory from outside)."""
    py_spy = bench.find_py_spy() if directory else None
    if directory is None or py_spy is None:
        if directory is not None:
            print("  --profile: py-spy not found; profiling skipped")
        return None, None
    raw = bench.profile_path(directory, "heartbeats")
    argv = [py_spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "100"]
    argv += ["--nonblocking", "--output", str(raw)]
    popen = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=bench._die_with_parent,
    )
    return popen, raw


async def active_workers(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM workers WHERE is_active"))


async def run(args: argparse.Namespace, h: bench.Harness) -> int:
    env = bench.child_env()
    env["HEWER_LOG_LEVEL"] = args.engine_log_level
    bench.print_machine()
    dev = await bench.start_dev_engine(h, env=env)
    engine, client_env, host = dev.proc, dev.client_env, dev.host
    dsn = dev.dsn
    mon = bench.MemoryMonitor(engine.popen.pid, dev.pg_dir / "postmaster.pid")
    sampler = LockSampler(dsn)
    await sampler.start()
    conn = await asyncpg.connect(dsn)
    failed = False

    def cpu_now(sim_pid: int | None) -> tuple[float, float, float, float]:
        eng, pg = mon.cpu()
        return (eng, pg, backend_cpu(sampler.backend_pid), bench.tree_cpu(sim_pid or 0))

    def cpu_line(name: str, a: tuple[float, ...], b: tuple[float, ...], wall: float) -> float:
        eng = 100 * (b[0] - a[0]) / wall
        pg = 100 * (b[1] - a[1] - (b[2] - a[2])) / wall  # minus the sampler's backend
        sim = 100 * (b[3] - a[3]) / wall
        print(
            f"{name}: engine {eng:.1f} % + PostgreSQL {pg:.1f} % = {eng + pg:.1f} % of one core "
            f"over {wall:.0f} s (simulator {sim:.1f} %, excluded)",
            flush=True,
        )
        return eng + pg

    # 1. idle floor
    c0, t0 = cpu_now(None), time.perf_counter()
    await asyncio.sleep(args.idle)
    cpu_line("idle, no workers", c0, cpu_now(None), time.perf_counter() - t0)

    # 2. registration
    sim_env = {**bench.child_env(), **client_env}
    argv = [sys.executable, SCRIPT, "--role", "sim", "--host", host]
    argv += ["--workers", str(args.workers), "--task-workers", str(args.task_workers)]
    argv += ["--slots", str(args.slots), "--register-concurrency", str(args.register_concurrency)]
    proc = h.spawn("sim", argv, env=sim_env, stdout_pipe=True, stdin_pipe=True)
    sim = Sim(proc)
    t_reg = time.perf_counter()
    rpc_seconds = float(await asyncio.to_thread(sim.read_tagged, "REGISTERED", 300))
    while await active_workers(conn) < args.workers:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"simulator exited:\n{bench.tail(proc.log_path)}")
        if time.perf_counter() - t_reg > 300:
            raise RuntimeError(f"only {await active_workers(conn)} workers became active")
        await asyncio.sleep(0.1)
    print(
        f"registration: {args.workers} workers registered in {rpc_seconds:.1f} s "
        f"(Register RPCs, {args.register_concurrency} at once), all listening after "
        f"{time.perf_counter() - t_reg:.1f} s",
        flush=True,
    )

    # 3. heartbeats only; one heartbeat round to settle first
    await asyncio.sleep(HEARTBEAT_EVERY)
    profiler, raw = start_profiler(args.profile, engine.popen.pid)
    sim.send("MEASURE")
    c0, t0 = cpu_now(proc.popen.pid), time.perf_counter()
    await asyncio.sleep(args.period)
    c1, wall = cpu_now(proc.popen.pid), time.perf_counter() - t0
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        await asyncio.to_thread(profiler.wait, 30)
    sim.send("REPORT")
    beats = json.loads(await asyncio.to_thread(sim.read_tagged, "REPORT", 30))
    combined = cpu_line(f"heartbeats, {args.workers} workers", c0, c1, wall)
    print(
        f"  {beats['n']} heartbeats ({beats['n'] / wall:.0f}/s), RPC latency p50 "
        f"{beats['p50_ms']:.1f} ms, p99 {beats['p99_ms']:.1f} ms, max {beats['max_ms']:.0f} ms; "
        f"budget {BUDGET_PCT:.0f} %: {'OK' if combined < BUDGET_PCT else 'OVER'}",
        flush=True,
    )
    failed |= combined >= BUDGET_PCT
    if raw is not None:
        bench.summarize_profile(raw, top=25)
    for line in sampler.summary():
        print("  " + line, flush=True)

    # 4. task load while the heartbeats go on
    if args.tasks > 0:
        load = bench.Load(host, client_env["HATCHET_CLIENT_TOKEN"], 1)
        await load.start()
        try:
            await asyncio.wait_for(load.warmup(NOOP_WORKFLOW, proc), 60)
            c0 = cpu_now(proc.popen.pid)
            r = await load.bulk(NOOP_WORKFLOW, args.tasks, 500, 1000, args.timeout)
            cpu_line(f"tasks + heartbeats ({r.done} runs)", c0, cpu_now(proc.popen.pid), r.wall)
            print(
                f"  {r.done}/{r.n} runs on {args.task_workers} of {args.workers} workers: "
                f"{r.rate:.0f} runs/s, trigger→result p50 {r.pct(50):.0f} ms, "
                f"p99 {r.pct(99):.0f} ms",
                flush=True,
            )
            failed |= r.done < r.n
        finally:
            await load.close()
    sim.send("REPORT")
    final = json.loads(await asyncio.to_thread(sim.read_tagged, "REPORT", 30))
    print(f"simulator counters: {final['counts']}", flush=True)
    await sampler.stop()
    await conn.close()
    for line in sampler.summary():
        print(line, flush=True)
    on_workers = sampler.waits_on("workers")
    failed |= on_workers > 0
    sim.send("STOP")
    h.stop(proc)
    return 1 if failed else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workers", type=int, default=500)
    p.add_argument("--task-workers", type=int, default=50, help="workers that serve the tasks")
    p.add_argument("--slots", type=int, default=10, help="slot config per worker")
    p.add_argument("--period", type=float, default=60.0, help="seconds of heartbeats measured")
    p.add_argument("--idle", type=float, default=10.0, help="seconds of idle engine measured")
    p.add_argument("--tasks", type=int, default=2000, help="no-op runs during the heartbeats")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the runs")
    p.add_argument("--register-concurrency", type=int, default=50)
    p.add_argument("--engine-log-level", default="WARNING")
    p.add_argument(
        "--profile", metavar="DIR", default=None, help="py-spy the engine's heartbeat phase"
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs) for debugging")
    p.add_argument("--role", choices=["bench", "sim"], default="bench", help=argparse.SUPPRESS)
    p.add_argument("--host", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.task_workers = max(1, min(args.task_workers, args.workers))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "sim":
        asyncio.run(sim_main(args))
        return 0
    return bench.run_with_harness(run, args, prefix="hewer-wbench-", keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
