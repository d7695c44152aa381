"""Hewer throughput / latency benchmark (a script, not a test).

    .venv/bin/python tests/bench/bench.py [--tasks N] [--quick] [--profile DIR]
                                          [--database-url URL]

Starts a fresh ``hewer dev`` engine (own data dir under /tmp, free ports) and measures:
(with ``--database-url``: ``hewer serve`` on a fresh database of that server instead, so
Hewer and a peer queue can be measured on one server with the same settings)

1. lean worker: a protocol-level grpc.aio worker (separate process) that answers every
   AssignedAction with COMPLETED, 500 slots. Low-rate phase (sequential single triggers →
   unloaded latency), then a bulk phase (BulkTriggerWorkflow in chunks, results over
   SubscribeToWorkflowRuns) → tasks/s and trigger→result latency percentiles.
2. the same lean worker on a 3-task DAG a → b → c → runs/s.
3. an official hatchet-sdk worker (separate process, no-op async task) → tasks/s, latency.

The engine's peak RSS (VmHWM, i.e. including the load phases) is reported at the end, with the
CPU seconds the engine and its PostgreSQL used per phase. See tests/bench/README.md.
"""

from __future__ import annotations

import os

# We fork only to exec helper processes; without this grpc logs "skipping fork() handlers".
# Must be set before grpc is imported; removed again from the children's environment.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import argparse
import asyncio
import collections
import contextlib
import ctypes
import importlib.metadata
import json
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from hatchet_sdk import Context, EmptyModel, Hatchet
from hatchet_sdk.contracts import dispatcher_pb2 as dpb
from hatchet_sdk.contracts import dispatcher_pb2_grpc, workflows_pb2, workflows_pb2_grpc
from hatchet_sdk.contracts.v1 import workflows_pb2 as v1pb
from hatchet_sdk.contracts.v1 import workflows_pb2_grpc as v1grpc
from hatchet_sdk.contracts.v1.shared import trigger_pb2

try:
    import psutil
except ImportError:  # pragma: no cover - psutil ships with the dev environment
    psutil = None

import shared_pg  # tests/bench/shared_pg.py, next to this script

from hewer.engine.db.embedded import EmbeddedPostgres

REPO = Path(__file__).resolve().parents[2]
HEWER = REPO / ".venv" / "bin" / "hewer"
SCRIPT = str(Path(__file__).resolve())

NOOP_WORKFLOW = "bench-noop"
DAG_WORKFLOW = "bench-dag"
SDK_WORKFLOW = "bench-sdk-noop"
LEAN_ACTIONS = ["bench-noop:noop", "bench-dag:a", "bench-dag:b", "bench-dag:c"]

TARGETS = {
    "lean_tps": 4000.0,  # tasks/s, lean worker
    "lean_p50_ms": 5.0,  # unloaded trigger→result p50
    "sdk_tps": 1000.0,  # tasks/s, official SDK worker
    "sdk_cap_pct": 80.0,  # SDK path throughput as % of what the SDK worker process can do
    "dag_rps": 500.0,  # 3-task DAG runs/s
    "rss_mb": 300.0,  # engine peak RSS
}

CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 60_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.max_send_message_length", 4 * 1024 * 1024),
]


def _sdk_version() -> str:
    try:
        return importlib.metadata.version("hatchet-sdk")
    except importlib.metadata.PackageNotFoundError:
        return "?"


SDK_VERSION = _sdk_version()


def _now_ts() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


def completed_event(worker_id: str, action: Any) -> Any:
    """What a lean worker reports for an assigned action: COMPLETED with ``{}``."""
    return dpb.StepActionEvent(
        worker_id=worker_id,
        job_id=action.job_id,
        job_run_id=action.job_run_id,
        task_id=action.task_id,
        task_run_external_id=action.task_run_external_id,
        action_id=action.action_id,
        event_timestamp=_now_ts(),
        event_type=dpb.STEP_EVENT_TYPE_COMPLETED,
        event_payload="{}",
        retry_count=action.retry_count,
    )


def _metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"bearer {token}"),)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    if env.get("GRPC_ENABLE_FORK_SUPPORT") == "false":
        env.pop("GRPC_ENABLE_FORK_SUPPORT")
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM the child when the benchmark dies (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# --------------------------------------------------------------------------------------------
# workflow definitions (v1 CreateWorkflowVersionRequest)


def _task(readable_id: str, action: str, parents: list[str] | None = None) -> Any:
    return v1pb.CreateTaskOpts(
        readable_id=readable_id,
        action=action,
        timeout="60s",
        schedule_timeout="5m",
        inputs="{}",
        parents=parents or [],
        retries=0,
        slot_requests={"default": 1},
    )


def noop_workflow() -> Any:
    return v1pb.CreateWorkflowVersionRequest(
        name=NOOP_WORKFLOW,
        description="hewer bench no-op",
        version="",
        tasks=[_task("noop", "bench-noop:noop")],
    )


def dag_workflow() -> Any:
    return v1pb.CreateWorkflowVersionRequest(
        name=DAG_WORKFLOW,
        description="hewer bench 3-task chain",
        version="",
        tasks=[
            _task("a", "bench-dag:a"),
            _task("b", "bench-dag:b", ["a"]),
            _task("c", "bench-dag:c", ["b"]),
        ],
    )


# --------------------------------------------------------------------------------------------
# role: lean protocol-level worker (runs in its own process)


async def lean_worker_main(host: str, token: str, slots: int, senders: int) -> None:
    md = _metadata(token)
    channel = grpc.aio.insecure_channel(host, options=CHANNEL_OPTIONS)
    admin = v1grpc.AdminServiceStub(channel)
    await admin.PutWorkflow(noop_workflow(), metadata=md, timeout=30)
    await admin.PutWorkflow(dag_workflow(), metadata=md, timeout=30)
    disp = dispatcher_pb2_grpc.DispatcherStub(channel)  # type: ignore[attr-defined]
    reg = await disp.Register(
        dpb.WorkerRegisterRequest(
            worker_name="bench-lean-worker",
            actions=LEAN_ACTIONS,
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
    queue: asyncio.Queue[Any] = asyncio.Queue()
    counts = collections.Counter[str]()
    stop = asyncio.Event()

    async def listen() -> None:
        backoff = 0.2
        while not stop.is_set():
            try:
                stream = disp.ListenV2(dpb.WorkerListenRequest(worker_id=worker_id), metadata=md)
                async for action in stream:
                    backoff = 0.2
                    if action.action_type == dpb.START_STEP_RUN:
                        counts["assigned"] += 1
                        queue.put_nowait(action)
                    else:
                        counts[f"action_type_{action.action_type}"] += 1
            except grpc.aio.AioRpcError as exc:
                counts["listen_errors"] += 1
                print(f"lean worker: ListenV2 ended: {exc.code()} {exc.details()}", file=sys.stderr)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5)

    async def send() -> None:
        while True:
            a = await queue.get()
            event = completed_event(worker_id, a)
            for attempt in range(5):
                try:
                    await disp.SendStepActionEvent(event, metadata=md, timeout=60)
                    counts["completed"] += 1
                    break
                except grpc.aio.AioRpcError as exc:
                    counts["send_errors"] += 1
                    if attempt == 4 or exc.code() in (
                        grpc.StatusCode.INVALID_ARGUMENT,
                        grpc.StatusCode.PERMISSION_DENIED,
                    ):
                        print(
                            f"lean worker: send failed: {exc.code()} {exc.details()}",
                            file=sys.stderr,
                        )
                        break
                    await asyncio.sleep(0.1 * (attempt + 1))

    async def heartbeat() -> None:
        while True:
            try:
                await disp.Heartbeat(
                    dpb.HeartbeatRequest(worker_id=worker_id, heartbeat_at=_now_ts()),
                    metadata=md,
                    timeout=5,
                )
            except grpc.aio.AioRpcError as exc:
                counts["heartbeat_errors"] += 1
                print(f"lean worker: heartbeat: {exc.code()} {exc.details()}", file=sys.stderr)
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
    print(json.dumps(dict(counts)), flush=True)


# --------------------------------------------------------------------------------------------
# role: official SDK worker (runs in its own process)


def sdk_worker_main(slots: int) -> None:
    # the SDK reads the task's type hints at decoration time: its names must be module globals
    hatchet = Hatchet()

    @hatchet.task(name=SDK_WORKFLOW)
    async def noop(input: EmptyModel, ctx: Context) -> dict[str, Any]:
        return {}

    worker = hatchet.worker("bench-sdk-worker", slots=slots, workflows=[noop])
    worker.start()


# --------------------------------------------------------------------------------------------
# the orchestrating process


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path


@dataclass
class Harness:
    tmp: Path
    procs: list[Proc] = field(default_factory=list)
    # (server URL, database name) of databases this run created on a shared server
    databases: list[tuple[str, str]] = field(default_factory=list)

    def spawn(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        stdout_pipe: bool = False,
        stdin_pipe: bool = False,
    ) -> Proc:
        log_path = self.tmp / f"{name}.log"
        log = log_path.open("wb")
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin_pipe else None,
            stdout=subprocess.PIPE if stdout_pipe else log,
            stderr=log,
            env=env,
            start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
            preexec_fn=_die_with_parent,
        )
        log.close()
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, timeout: float = 20.0) -> None:
        p = proc.popen
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        if proc in self.procs:
            self.procs.remove(proc)

    def cleanup(self) -> None:
        # workers first, the engine (which stops its PostgreSQL) last
        for proc in reversed(list(self.procs)):
            with contextlib.suppress(Exception):
                self.stop(proc)
        for url, name in self.databases:  # after the engine: it holds connections to it
            try:
                asyncio.run(shared_pg.drop_database(url, name))
            except Exception as exc:
                print(f"could not drop database {name}: {exc!r}", file=sys.stderr)
        shutil.rmtree(self.tmp, ignore_errors=True)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class MemoryMonitor:
    """Samples the engine's RSS and its PostgreSQL's PSS; VmHWM gives the kernel's peak."""

    def __init__(self, pid: int, pg_pid_file: Path | None = None) -> None:
        self.pid = pid
        self._pg_pid_file = pg_pid_file
        self.peak_rss = 0
        self.peak_pg_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(0.25):
            self.peak_rss = max(self.peak_rss, self.rss())
            n += 1
            if n % 8 == 0:
                self.peak_pg_pss = max(self.peak_pg_pss, self.pg_pss())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def rss(self) -> int:
        if psutil is not None:
            with contextlib.suppress(Exception):
                # with --processes N: the parent and its N engine processes
                return sum(int(p.memory_info().rss) for p in self.engine_processes())
        return _proc_status_kb(self.pid, "VmRSS") * 1024

    def engine_processes(self) -> list[Any]:
        engine = psutil.Process(self.pid)
        return [engine, *engine.children()]

    def hwm(self) -> int:
        return _proc_status_kb(self.pid, "VmHWM") * 1024

    def pg_processes(self) -> list[Any]:
        """The embedded PostgreSQL's postmaster and its children (it daemonizes itself)."""
        if psutil is None or self._pg_pid_file is None:
            return []
        try:
            pg = psutil.Process(int(self._pg_pid_file.read_text().split()[0]))
            return [pg, *pg.children(recursive=True)]
        except Exception:
            return []

    def pg_pss(self) -> int:
        total = 0
        for proc in self.pg_processes():
            with contextlib.suppress(Exception):
                total += int(proc.memory_full_info().pss)
        return total

    def cpu(self) -> tuple[float, float]:
        """(engine, postgres) CPU seconds so far."""
        if psutil is None:
            return (0.0, 0.0)
        eng = pg = 0.0
        with contextlib.suppress(Exception):
            for p in self.engine_processes():
                t = p.cpu_times()
                eng += t.user + t.system
        for proc in self.pg_processes():
            with contextlib.suppress(Exception):
                ct = proc.cpu_times()
                pg += ct.user + ct.system
        return (eng, pg)


def _proc_status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class ResultStreams:
    """Trigger→result timing over SubscribeToWorkflowRuns (several bidi streams)."""

    def __init__(self, channel: grpc.aio.Channel, md: Any, n_streams: int) -> None:
        self._stub = dispatcher_pb2_grpc.DispatcherStub(channel)  # type: ignore[attr-defined]
        self._md = md
        self._n = n_streams
        self._queues: list[asyncio.Queue[str]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._waiters: dict[str, asyncio.Future[float]] = {}
        self._rr = 0
        self.errors = 0

    async def start(self) -> None:
        for _ in range(self._n):
            q: asyncio.Queue[str] = asyncio.Queue()
            call = self._stub.SubscribeToWorkflowRuns(metadata=self._md)
            self._queues.append(q)
            self._tasks.append(asyncio.create_task(self._writer(call, q)))
            self._tasks.append(asyncio.create_task(self._reader(call)))

    async def _writer(self, call: Any, q: asyncio.Queue[str]) -> None:
        while True:
            run_id = await q.get()
            await call.write(dpb.SubscribeToWorkflowRunsRequest(workflow_run_id=run_id))

    async def _reader(self, call: Any) -> None:
        while True:
            ev = await call.read()
            if ev is grpc.aio.EOF:
                return
            now = time.perf_counter()
            fut = self._waiters.pop(ev.workflow_run_id, None)
            if fut is None:
                continue
            if any(r.HasField("error") for r in ev.results):
                self.errors += 1
            if not fut.done():
                fut.set_result(now)

    def watch(self, run_id: str) -> asyncio.Future[float]:
        """A future that resolves to the perf_counter() time the run's result arrived."""
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters[run_id] = fut
        self._queues[self._rr % self._n].put_nowait(run_id)
        self._rr += 1
        return fut

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@dataclass
class PhaseResult:
    name: str
    n: int
    done: int
    wall: float
    latencies: list[float]
    errors: int
    cpu_engine: float = 0.0
    cpu_pg: float = 0.0
    cpu_worker: float = 0.0
    note: str = ""

    @property
    def rate(self) -> float:
        return self.done / self.wall if self.wall > 0 else 0.0

    def pct(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        k = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
        return xs[k] * 1000


class Load:
    def __init__(self, host: str, token: str, n_streams: int) -> None:
        self.md = _metadata(token)
        self.channel = grpc.aio.insecure_channel(host, options=CHANNEL_OPTIONS)
        self.wf = workflows_pb2_grpc.WorkflowServiceStub(self.channel)
        self.results = ResultStreams(self.channel, self.md, n_streams)

    async def start(self) -> None:
        await self.results.start()

    async def close(self) -> None:
        await self.results.close()
        await self.channel.close(grace=1)

    async def trigger_one(self, name: str) -> str:
        resp = await self.wf.TriggerWorkflow(
            trigger_pb2.TriggerWorkflowRequest(name=name, input="{}", additional_metadata="{}"),
            metadata=self.md,
            timeout=30,
        )
        return str(resp.workflow_run_id)

    async def warmup(self, name: str, worker: Proc, deadline: float = 90.0) -> float:
        """Trigger until the workflow exists, then wait for one result (the worker is live)."""
        end = time.monotonic() + deadline
        while True:
            if worker.popen.poll() is not None:
                raise RuntimeError(f"{worker.name} exited with {worker.popen.returncode}")
            try:
                t0 = time.perf_counter()
                run_id = await self.trigger_one(name)
                break
            except grpc.aio.AioRpcError as exc:
                if time.monotonic() > end:
                    raise RuntimeError(f"cannot trigger {name}: {exc.details()}") from exc
                await asyncio.sleep(0.5)
        return await asyncio.wait_for(self.results.watch(run_id), deadline) - t0

    async def sequential(self, name: str, n: int) -> PhaseResult:
        """One run at a time: trigger, wait for its result, repeat (unloaded latency)."""
        lat: list[float] = []
        trig: list[float] = []
        start = time.perf_counter()
        for _ in range(n):
            t0 = time.perf_counter()
            run_id = await self.trigger_one(name)
            trig.append(time.perf_counter() - t0)
            lat.append(await asyncio.wait_for(self.results.watch(run_id), 30) - t0)
        r = PhaseResult(f"{name} sequential", n, len(lat), time.perf_counter() - start, lat, 0)
        r.note = f"TriggerWorkflow RPC alone: p50 {1000 * statistics.median(trig):.1f} ms"
        return r

    async def bulk(self, name: str, n: int, chunk: int, window: int, wait: float) -> PhaseResult:
        futures: list[asyncio.Future[float]] = []
        starts: list[float] = []
        inflight = 0
        room = asyncio.Event()
        room.set()
        trigger_errors = 0

        def finished(_: asyncio.Future[float]) -> None:
            nonlocal inflight
            inflight -= 1
            if window <= 0 or inflight + chunk <= window:
                room.set()

        start = time.perf_counter()
        sent = 0
        while sent < n:
            size = min(chunk, n - sent)
            while window > 0 and inflight + size > window:
                room.clear()
                await room.wait()
            req = workflows_pb2.BulkTriggerWorkflowRequest(
                workflows=[
                    trigger_pb2.TriggerWorkflowRequest(
                        name=name, input="{}", additional_metadata="{}"
                    )
                    for _ in range(size)
                ]
            )
            t0 = time.perf_counter()
            try:
                resp = await self.wf.BulkTriggerWorkflow(req, metadata=self.md, timeout=60)
            except grpc.aio.AioRpcError as exc:
                trigger_errors += 1
                print(f"  bulk trigger failed: {exc.code()} {exc.details()}", file=sys.stderr)
                if trigger_errors > 5:
                    break
                await asyncio.sleep(0.5)
                continue
            for run_id in resp.workflow_run_ids:
                fut = self.results.watch(run_id)
                fut.add_done_callback(finished)
                futures.append(fut)
                starts.append(t0)
                inflight += 1
            sent += size
        if futures:
            await asyncio.wait(futures, timeout=wait)
        ends: list[float] = []
        lat: list[float] = []
        for fut, t0 in zip(futures, starts, strict=True):
            if fut.done() and not fut.cancelled():
                ends.append(fut.result())
                lat.append(fut.result() - t0)
            else:
                fut.cancel()
        # wall time = first trigger sent -> last result received
        wall = (max(ends) if ends else time.perf_counter()) - start
        return PhaseResult(f"{name} bulk", n, len(lat), wall, lat, trigger_errors)


# --------------------------------------------------------------------------------------------


def fmt_mb(b: int) -> str:
    return f"{b / 1024 / 1024:.0f} MB"


def verdict(value: float, target: float, higher_is_better: bool = True) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "ok" if ok else "MISS"


def print_header() -> None:
    print(
        f"  {'phase':<24} {'runs':>6} {'runs/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
        "   CPU ms per run: engine / postgres / worker"
    )


def print_phase(r: PhaseResult) -> None:
    missing = f"  ({r.n - r.done} of {r.n} missing!)" if r.done < r.n else ""
    errors = f"  ({r.errors} errors)" if r.errors else ""
    per = 1000 / max(1, r.done)
    print(
        f"  {r.name:<24} {r.done:>6} {r.rate:>8.1f} {r.pct(50):>8.1f} {r.pct(95):>8.1f} "
        f"{r.pct(99):>8.1f}   {r.cpu_engine * per:6.2f} / {r.cpu_pg * per:6.2f} / "
        f"{r.cpu_worker * per:6.2f}{missing}{errors}",
        flush=True,
    )
    if r.note:
        print(f"  {'':<24} ({r.note})")


def read_env_lines(proc: Proc, timeout: float) -> dict[str, str]:
    env: dict[str, str] = {}
    assert proc.popen.stdout is not None
    end = time.monotonic() + timeout
    stdout = proc.popen.stdout
    while len(env) < 4:
        if time.monotonic() > end or proc.popen.poll() is not None:
            raise RuntimeError(f"engine did not become ready:\n{tail(proc.log_path)}")
        line = stdout.readline().decode().strip()
        if line.startswith("HATCHET_CLIENT_") and "=" in line:
            k, v = line.split("=", 1)
            env[k] = v
    # keep draining so the engine never blocks on a full pipe
    threading.Thread(target=lambda: [None for _ in stdout], daemon=True).start()
    return env


@dataclass
class DevEngine:
    """A ``hewer dev`` engine started by ``start_dev_engine``."""

    proc: Proc
    data_dir: Path
    grpc_port: int
    http_port: int
    client_env: dict[str, str]  # the HATCHET_CLIENT_* lines it printed

    @property
    def host(self) -> str:
        return f"localhost:{self.grpc_port}"

    @property
    def pg_dir(self) -> Path:
        """Where ``hewer dev`` keeps its embedded PostgreSQL (cli._database)."""
        return self.data_dir / "pg"

    @property
    def dsn(self) -> str:
        return EmbeddedPostgres(data_dir=self.pg_dir).dsn


def new_data_dir(h: Harness) -> Path:
    """An empty data dir in the harness's temp dir; the embedded PostgreSQL runs as
    ``nobody`` when we are root, so both must be traversable."""
    data_dir = h.tmp / "data"
    data_dir.mkdir()
    os.chmod(h.tmp, 0o755)
    os.chmod(data_dir, 0o755)
    return data_dir


async def start_dev_engine(
    h: Harness, *, env: dict[str, str], name: str = "engine", extra_args: Sequence[str] = ()
) -> DevEngine:
    """``hewer dev`` on a fresh data dir and free ports, once it printed its client lines."""
    data_dir = new_data_dir(h)
    grpc_port, http_port = _free_port(), _free_port()
    proc = h.spawn(
        name,
        [
            *(str(HEWER), "dev", "--data-dir", str(data_dir)),
            *("--grpc-port", str(grpc_port), "--http-port", str(http_port)),
            *extra_args,
        ],
        env=env,
        stdout_pipe=True,
    )
    client_env = await asyncio.to_thread(read_env_lines, proc, 90)
    return DevEngine(proc, data_dir, grpc_port, http_port, client_env)


def print_machine() -> None:
    la = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {la} at start", flush=True)


def read_ready(proc: Proc, timeout: float) -> str:
    assert proc.popen.stdout is not None
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.popen.stdout.readline().decode()
        if not line:
            break
        if line.startswith("READY"):
            return line.split()[1]
    raise RuntimeError(f"{proc.name} did not start:\n{tail(proc.log_path)}")


def profile_path(directory: str, name: str) -> Path:
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    return path / f"engine-{name}.txt"


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its live children (the SDK worker forks a listener)."""
    if psutil is None:
        return 0.0
    total = 0.0
    with contextlib.suppress(Exception):
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(Exception):
                t = proc.cpu_times()
                total += t.user + t.system
    return total


def process_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of a process and each of its live children, by pid."""
    out: dict[int, float] = {}
    if psutil is None:
        return out
    with contextlib.suppress(Exception):
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(Exception):
                t = proc.cpu_times()
                out[proc.pid] = t.user + t.system
    return out


def worker_cap(done: int, before: dict[int, float], after: dict[int, float]) -> float:
    """Tasks/s the SDK worker itself could do: its busiest process (the SDK splits the action
    listener and the task runner) given a whole core, at the CPU per task it used."""
    busiest = max((cpu - before.get(pid, 0.0) for pid, cpu in after.items()), default=0.0)
    return done / busiest if busiest > 0 else float("nan")


def gc_probe_env(env: dict[str, str], data_dir: Path) -> Path:
    """Load tests/bench/gc_probe into the engine (it times every garbage collection)."""
    probe = str(Path(__file__).resolve().parent / "gc_probe")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (probe, env.get("PYTHONPATH")) if p)
    out = data_dir.parent / "gc-stats.json"
    env["HEWER_BENCH_GC_OUT"] = str(out)
    return out


def print_gc_stats(out: Path) -> None:
    """The engine processes' garbage collections over the whole run (the probe's last
    summary, written every second, so up to a second is missing)."""
    files = sorted(out.parent.glob(f"{out.name}.*[0-9]"))
    if not files:
        print("engine GC: no summary from the probe")
        return
    for path in files:
        summary = json.loads(path.read_text())
        parts = [
            f"gen{g}: {s['collections']} in {s['seconds']:.2f} s (longest "
            f"{1000 * s['longest']:.0f} ms)"
            for g, s in summary["generations"].items()
        ]
        print(
            f"engine GC (pid {path.suffix[1:]}, thresholds {tuple(summary['thresholds'])}, "
            f"{summary['frozen']} objects frozen): " + "; ".join(parts)
        )
        full = ", ".join(f"{1000 * took:.0f} ms at {at:.0f} s" for at, took in summary["full"])
        print(f"  full collections: {full or 'none'}")


def find_py_spy() -> str | None:
    for cand in (
        shutil.which("py-spy"),
        str(REPO / ".venv/bin/py-spy"),
        "/tmp/pyspy-venv/bin/py-spy",
    ):
        if cand and os.path.exists(cand):
            return cand
    return None


def summarize_profile(raw: Path, top: int = 15) -> None:
    """Print where the engine spent its samples, from a py-spy ``--format raw`` file.

    Frames are grouped by function (line numbers dropped). Two views: each sample charged to
    the deepest Hewer frame on its stack (or to the leaf outside Hewer: asyncio, grpc's poller
    thread, idle select), and inclusive time of Hewer and asyncpg functions. grpc's Cython
    internals are invisible to py-spy without --native: they show up as ``Handle._run`` and
    ``Thread.run`` (the grpc.aio completion-queue poller).
    """
    deepest: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        c = int(count)
        total += c
        frames = [re.sub(r":\d+\)$", ")", f.strip()) for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        ours = [f for f in frames if "(engine/" in f and "cli.py" not in f]
        deepest[ours[-1] if ours else f"[outside hewer] {frames[-1]}"] += c
        for f in set(frames):
            if ("(engine/" in f and "cli.py" not in f) or "asyncpg/" in f:
                inclusive[f] += c
    if not total:
        return
    print(f"\nengine profile {raw.name} ({total} samples, {raw})")
    print("  samples by deepest hewer frame:")
    for f, c in deepest.most_common(top):
        print(f"    {100 * c / total:5.1f}%  {f}")
    print("  inclusive (hewer and asyncpg functions):")
    for f, c in inclusive.most_common(top):
        print(f"    {100 * c / total:5.1f}%  {f}")


async def start_serve_engine(
    *, args: argparse.Namespace, h: Harness, env: dict[str, str], grpc_port: int, http_port: int
) -> tuple[Proc, Path | None]:
    """``hewer serve`` on a database of its own on the --database-url server.

    A new database per run: every run starts with empty tables, like ``hewer dev`` on its
    fresh data dir. ``serve`` mints a token at start and prints the same HATCHET_CLIENT_*
    lines as ``dev``. Returns the engine and the server's postmaster.pid (for CPU figures),
    if the server runs here.
    """
    name = await shared_pg.create_database(args.database_url, "hewer_bench")
    h.databases.append((args.database_url, name))
    engine = h.spawn(
        "engine",
        [
            *(str(HEWER), "serve", "--grpc-port", str(grpc_port), "--http-port", str(http_port)),
            *("--processes", str(args.processes)),
        ],
        env={**env, "HEWER_DATABASE_URL": shared_pg.with_database(args.database_url, name)},
        stdout_pipe=True,
    )
    print(f"engine: hewer serve on database {name} of --database-url", flush=True)
    return engine, await shared_pg.postmaster_pid_file(args.database_url)


async def describe_database(*, args: argparse.Namespace, data_dir: Path) -> shared_pg.ServerInfo:
    """The server's version and durability settings, printed next to the figures."""
    url = args.database_url or EmbeddedPostgres(data_dir=data_dir / "pg").dsn
    info = await shared_pg.server_info(url)
    where = "shared server (--database-url)" if args.database_url else "hewer dev's embedded"
    print(f"database: {where}: {info.describe()}", flush=True)
    return info


async def run_bench(args: argparse.Namespace, h: Harness) -> int:
    grpc_port, http_port = _free_port(), _free_port()
    data_dir = new_data_dir(h)
    env = child_env()
    env["HEWER_LOG_LEVEL"] = args.engine_log_level
    gc_out = gc_probe_env(env, data_dir) if args.gc_stats else None
    print_machine()
    t_boot = time.perf_counter()
    pg_pid_file: Path | None = data_dir / "pg" / "postmaster.pid"
    if args.database_url:
        engine, pg_pid_file = await start_serve_engine(
            args=args, h=h, env=env, grpc_port=grpc_port, http_port=http_port
        )
    else:
        engine = h.spawn(
            "engine",
            [
                str(HEWER),
                "dev",
                "--data-dir",
                str(data_dir),
                "--grpc-port",
                str(grpc_port),
                "--http-port",
                str(http_port),
                # several engine processes behind the ports (engine/hewer/engine/processes.py)
                "--processes",
                str(args.processes),
            ],
            env=env,
            stdout_pipe=True,
        )
    client_env = await asyncio.to_thread(read_env_lines, engine, 90)
    server = await describe_database(args=args, data_dir=data_dir)
    print(
        f"engine ready in {time.perf_counter() - t_boot:.1f}s on gRPC :{grpc_port} "
        f"(pid {engine.popen.pid}, idle RSS {fmt_mb(MemoryMonitor(engine.popen.pid).rss())})",
        flush=True,
    )
    host = f"localhost:{grpc_port}"
    token = client_env["HATCHET_CLIENT_TOKEN"]
    mon = MemoryMonitor(engine.popen.pid, pg_pid_file)
    mon.start()

    results: dict[str, PhaseResult] = {}
    sdk_cap = float("nan")  # tasks/s the SDK worker process itself could do (worker_cap)
    profiles: list[Path] = []
    py_spy = find_py_spy() if args.profile else None
    if args.profile and not py_spy:
        print("  --profile: py-spy not found (pip install py-spy); profiling skipped")

    async def phase(key: str, run: Any, worker: Proc, profile: str | None = None) -> None:
        """Run one measured phase; attach CPU seconds (and a py-spy profile) to it."""
        profiler = None
        if py_spy and profile:
            raw = profile_path(args.profile, profile)
            profiler = subprocess.Popen(  # noqa: ASYNC220 - returns at once
                [
                    *(py_spy, "record", "--pid", str(engine.popen.pid), "--format", "raw"),
                    *("--rate", "50", "--output", str(raw)),
                    # --native needs to pause the process to unwind C stacks
                    *(("--native",) if args.profile_native else ("--nonblocking",)),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
            profiles.append(raw)
            await asyncio.sleep(1.0)  # attach
        cpu0, w0 = mon.cpu(), tree_cpu(worker.popen.pid)
        r: PhaseResult = await run
        cpu1, w1 = mon.cpu(), tree_cpu(worker.popen.pid)
        r.cpu_engine, r.cpu_pg, r.cpu_worker = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1], w1 - w0
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(profiler.wait, 30)
        print_phase(r)
        results[key] = r

    worker_env = child_env()
    worker_env.update(client_env)
    load = Load(host, token, args.sub_streams)
    await load.start()
    bulk = load.bulk
    try:
        # ---- lean protocol-level worker
        lean = h.spawn(
            "lean-worker",
            [
                *(sys.executable, SCRIPT, "--role", "lean-worker", "--host", host),
                *("--slots", str(args.lean_slots), "--senders", str(args.senders)),
            ],
            env=worker_env,
            stdout_pipe=True,
        )
        await asyncio.to_thread(read_ready, lean, 60)
        print(
            f"\nlean worker (protocol-level, {args.lean_slots} slots, "
            f"{args.senders} concurrent senders); window {args.window or 'unbounded'}, "
            f"chunks of {args.chunk}",
            flush=True,
        )
        print_header()
        await load.warmup(NOOP_WORKFLOW, lean)
        await load.warmup(DAG_WORKFLOW, lean)
        await phase("lean_seq", load.sequential(NOOP_WORKFLOW, args.low_rate), lean, "lean-seq")
        await bulk(NOOP_WORKFLOW, min(500, args.tasks), args.chunk, args.window, 60)  # warm-up
        await phase(
            "lean_bulk",
            bulk(NOOP_WORKFLOW, args.tasks, args.chunk, args.window, args.timeout),
            lean,
            "lean-bulk",
        )
        await phase("dag_seq", load.sequential(DAG_WORKFLOW, max(1, args.low_rate // 4)), lean)
        await phase(
            "dag_bulk",
            bulk(DAG_WORKFLOW, args.dag_runs, args.chunk, args.window, args.timeout),
            lean,
            "dag-bulk",
        )
        h.stop(lean)
        if lean.popen.stdout is not None:
            counters = lean.popen.stdout.read().decode().strip()
            print(f"  lean worker counters: {counters}")

        # ---- official SDK worker
        if args.sdk_tasks > 0:
            sdk = h.spawn(
                "sdk-worker",
                [sys.executable, SCRIPT, "--role", "sdk-worker", "--slots", str(args.sdk_slots)],
                env=worker_env,
            )
            print(
                f"\nofficial hatchet-sdk {SDK_VERSION} worker ({args.sdk_slots} slots, "
                "async no-op task)",
                flush=True,
            )
            print_header()
            await load.warmup(SDK_WORKFLOW, sdk)
            await phase("sdk_seq", load.sequential(SDK_WORKFLOW, max(1, args.low_rate // 2)), sdk)
            await bulk(SDK_WORKFLOW, min(200, args.sdk_tasks), args.chunk, args.window, 60)
            sdk_cpu_before = process_cpu(sdk.popen.pid)
            await phase(
                "sdk_bulk",
                bulk(SDK_WORKFLOW, args.sdk_tasks, args.chunk, args.window, args.timeout),
                sdk,
                "sdk-bulk",
            )
            sdk_cap = worker_cap(
                results["sdk_bulk"].done, sdk_cpu_before, process_cpu(sdk.popen.pid)
            )
            print(
                f"  SDK worker's own cap: {sdk_cap:.0f} tasks/s (its busiest process on a whole "
                "core); the engine delivered "
                f"{100 * results['sdk_bulk'].rate / sdk_cap:.0f} % of it",
                flush=True,
            )
            h.stop(sdk)
    finally:
        await load.close()
        mon.stop()

    peak = max(mon.hwm(), mon.peak_rss)
    print(
        f"\nengine peak RSS (VmHWM, whole run incl. load): {fmt_mb(peak)}; "
        f"{'shared' if args.database_url else 'embedded'} PostgreSQL peak PSS (all backends): "
        f"{fmt_mb(mon.peak_pg_pss)}"
    )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if gc_out is not None:
        print_gc_stats(gc_out)
    for raw in profiles:
        if raw.exists():
            summarize_profile(raw)

    print(f"\nsummary (measured vs target; {server.describe()})")
    rows: list[tuple[str, float, float, bool, str]] = []
    if "lean_bulk" in results:
        rows.append(
            ("lean worker tasks/s", results["lean_bulk"].rate, TARGETS["lean_tps"], True, "/s")
        )
    if "lean_seq" in results:
        rows.append(
            (
                "lean worker p50 unloaded",
                results["lean_seq"].pct(50),
                TARGETS["lean_p50_ms"],
                False,
                " ms",
            )
        )
    if "sdk_bulk" in results:
        rows.append(
            ("SDK worker tasks/s", results["sdk_bulk"].rate, TARGETS["sdk_tps"], True, "/s")
        )
    if "sdk_bulk" in results and sdk_cap == sdk_cap:  # not NaN
        rows.append(
            (
                "SDK path % of worker's cap",
                100 * results["sdk_bulk"].rate / sdk_cap,
                TARGETS["sdk_cap_pct"],
                True,
                " %",
            )
        )
    if "dag_bulk" in results:
        rows.append(("3-task DAG runs/s", results["dag_bulk"].rate, TARGETS["dag_rps"], True, "/s"))
    rows.append(("engine peak RSS", peak / 1024 / 1024, TARGETS["rss_mb"], False, " MB"))
    for label, value, target, higher, unit in rows:
        op = ">=" if higher else "<="
        print(
            f"  {label:<28} {value:10.1f}{unit:<4} target {op} {target:,.0f}{unit:<4} "
            f"{verdict(value, target, higher)}"
        )
    incomplete = [r.name for r in results.values() if r.done < r.n]
    if incomplete:
        print(f"  incomplete phases: {', '.join(incomplete)}")
    if args.json:
        out = {
            k: {
                "rate": v.rate,
                "p50_ms": v.pct(50),
                "p95_ms": v.pct(95),
                "p99_ms": v.pct(99),
                "n": v.n,
                "done": v.done,
                "cpu_engine_s": v.cpu_engine,
                "cpu_pg_s": v.cpu_pg,
                "cpu_worker_s": v.cpu_worker,
            }
            for k, v in results.items()
        }
        out["engine_peak_rss_mb"] = peak / 1024 / 1024  # type: ignore[assignment]
        out["sdk_worker_cap_tps"] = sdk_cap  # type: ignore[assignment]
        out["server"] = {  # type: ignore[assignment]
            **server.as_dict(),
            "engine_command": "serve" if args.database_url else "dev",
        }
        await asyncio.to_thread(Path(args.json).write_text, json.dumps(out, indent=2))
    return 1 if incomplete else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tasks", type=int, default=None, help="no-op runs in the lean bulk phase")
    p.add_argument("--dag-runs", type=int, default=None, help="DAG runs in the bulk phase")
    p.add_argument(
        "--sdk-tasks",
        type=int,
        default=None,
        help="runs for the SDK worker (0 skips the SDK phase)",
    )
    p.add_argument(
        "--low-rate", type=int, default=None, help="sequential single triggers for unloaded latency"
    )
    p.add_argument("--quick", action="store_true", help="small sizes (< 1 minute)")
    p.add_argument("--chunk", type=int, default=500, help="runs per BulkTriggerWorkflow (<= 1000)")
    p.add_argument(
        "--window",
        type=int,
        default=1000,
        help="max runs in flight (0 = trigger everything as fast as accepted)",
    )
    p.add_argument(
        "--sub-streams",
        type=int,
        default=1,
        help="SubscribeToWorkflowRuns streams the load generator uses",
    )
    p.add_argument(
        "--processes", type=int, default=1, help="engine processes (hewer dev --processes N)"
    )
    p.add_argument("--lean-slots", type=int, default=500)
    p.add_argument("--senders", type=int, default=32, help="lean worker concurrent senders")
    p.add_argument("--sdk-slots", type=int, default=200)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait per phase")
    p.add_argument("--engine-log-level", default="WARNING")
    p.add_argument(
        "--profile",
        metavar="DIR",
        default=None,
        help="py-spy the engine during the lean phases and the SDK bulk phase, write DIR/*.txt",
    )
    p.add_argument(
        "--profile-native",
        action="store_true",
        help="with --profile: also sample C frames (grpc, protobuf, asyncpg internals)",
    )
    p.add_argument(
        "--database-url",
        metavar="URL",
        default=None,
        help="run `hewer serve` on a fresh database of this PostgreSQL server (created and\n"
        "dropped per run) instead of `hewer dev`'s embedded one; see pg_server.py",
    )
    p.add_argument("--json", metavar="FILE", default=None, help="also write figures as JSON")
    p.add_argument(
        "--gc-stats",
        action="store_true",
        help="time the engine's garbage collections (tests/bench/gc_probe) and print them",
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs) for debugging")
    # internal: child process roles
    p.add_argument(
        "--role",
        choices=["bench", "lean-worker", "sdk-worker"],
        default="bench",
        help=argparse.SUPPRESS,
    )
    p.add_argument("--host", default="", help=argparse.SUPPRESS)
    p.add_argument("--slots", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    quick = args.quick
    if args.tasks is None:
        args.tasks = 1000 if quick else 10000
    if args.dag_runs is None:
        args.dag_runs = max(1, args.tasks // 5)
    if args.sdk_tasks is None:
        args.sdk_tasks = max(1, args.tasks // (5 if quick else 2))
    if args.low_rate is None:
        args.low_rate = 40 if quick else 200
    args.chunk = max(1, min(1000, args.chunk))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "lean-worker":
        asyncio.run(
            lean_worker_main(
                args.host, os.environ["HATCHET_CLIENT_TOKEN"], args.slots, args.senders
            )
        )
        return 0
    if args.role == "sdk-worker":
        sdk_worker_main(args.slots)
        return 0

    return run_with_harness(run_bench, args, prefix="hewer-bench-", keep=args.keep)


def run_with_harness(
    run: Callable[[argparse.Namespace, Harness], Awaitable[int]],
    args: argparse.Namespace,
    *,
    prefix: str,
    keep: bool,
) -> int:
    """A benchmark's main: ``run`` with a harness in a new temp dir, stopped (children first)
    and removed however it ends, unless ``keep``; the log tails when it failed."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    h = Harness(tmp)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    started = time.perf_counter()
    try:
        code = asyncio.run(run(args, h))
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        code = 130
    except Exception as exc:
        print(f"\nbenchmark failed: {exc!r}", file=sys.stderr)
        for proc in h.procs:
            print(f"--- {proc.name} log tail:\n{tail(proc.log_path)}", file=sys.stderr)
        code = 1
    finally:
        if keep:
            print(f"logs kept in {tmp}", file=sys.stderr)
            for _url, name in h.databases:
                print(f"database {name} kept on --database-url", file=sys.stderr)
            for proc in reversed(list(h.procs)):
                h.stop(proc)
        else:
            h.cleanup()
    print(f"total time {time.perf_counter() - started:.0f}s")
    return code


if __name__ == "__main__":
    sys.exit(main())
