"""The peer for bench.py: pgqueuer on the same PostgreSQL server (a script, not a test).

    .venv/bin/pip install -e '.[bench]'      # pgqueuer 1.6.x; not an engine dependency
    .venv/bin/python tests/bench/peer_pgqueuer.py --database-url URL [--jobs N] [--json FILE]

On a fresh database of the server (created and dropped per run) with pgqueuer's schema, and
consumers in processes of their own (like bench.py's lean worker), it measures in bench.py's
units:

1. sequential single no-op jobs (batch size 1, which is pgqueuer's lowest-latency setting:
   a consumer writes a job's completion once ``batch_size`` completions are buffered or
   0.1 s passed) → unloaded enqueue→completion latency; the same for 3-step chains;
2. N no-op jobs enqueued in batches of ``--chunk`` → jobs/s, first enqueue → last completion;
3. N/5 3-step chains (job a enqueues b, b enqueues c) → chains/s.

A job is complete when its consumer has committed its completion (pgqueuer deletes the job's
row and writes its log row in one statement); we see that as the queue table going empty,
checked on each of pgqueuer's change notifications (and every 10 ms). Per-job latencies under
load are not collected: the bulk rows show rates only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import shared_pg

import bench  # tests/bench/bench.py: its process harness and its way of printing figures

SCRIPT = str(Path(__file__).resolve())
QUEUE_TABLE = "pgqueuer"  # pgqueuer's default table (PGQUEUER_* settings not used here)
CHANNEL = "ch_pgqueuer"
BULK_CHECK_INTERVAL = 0.005  # seconds between emptiness checks while a bulk phase drains


# --------------------------------------------------------------------------------------------
# role: consumer (runs in its own process)


async def consumer_main(*, url: str, batch_size: int, pool_size: int) -> None:
    from pgqueuer import Queries, QueueManager
    from pgqueuer.models import Job

    # a pool: the dequeue loop, completion writes, heartbeats and the chain's enqueues run
    # concurrently instead of queueing behind one connection's lock
    pool = await asyncpg.create_pool(url, min_size=2, max_size=pool_size)
    qm = QueueManager(Queries.from_asyncpg_pool(pool))

    @qm.entrypoint("noop")
    async def noop(job: Job) -> None:
        return None

    @qm.entrypoint("a")
    async def step_a(job: Job) -> None:
        await qm.queries.enqueue("b", None)

    @qm.entrypoint("b")
    async def step_b(job: Job) -> None:
        await qm.queries.enqueue("c", None)

    @qm.entrypoint("c")
    async def step_c(job: Job) -> None:
        return None

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, qm.shutdown.set)
    print("READY pgqueuer-consumer", flush=True)
    try:
        await qm.run(
            batch_size=batch_size,
            # housekeeping that folds the log into statistics every 30 s: off, so it does
            # not land in one round's phase and not another's (it only saves the peer work)
            log_aggregation_interval=timedelta(0),
        )
    finally:
        await pool.close()


# --------------------------------------------------------------------------------------------
# the orchestrating process


class DrainWatch:
    """Tells when the queue table is empty: every job enqueued so far is complete."""

    def __init__(self, *, listen: asyncpg.Connection, query: asyncpg.Connection) -> None:
        self._listen = listen
        self._query = query
        self._changed = asyncio.Event()

    async def start(self) -> None:
        await self._listen.add_listener(CHANNEL, self._on_notify)

    def _on_notify(self, *_: Any) -> None:
        self._changed.set()

    async def wait_empty(self, *, limit: float, min_interval: float = 0.0) -> float | None:
        """perf_counter() when the queue was seen empty, or None after limit seconds."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            self._changed.clear()  # before the check: a change during it triggers another
            if not await self._query.fetchval(f"SELECT EXISTS (SELECT 1 FROM {QUEUE_TABLE})"):
                return time.perf_counter()
            if min_interval:
                await asyncio.sleep(min_interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 0.01)
        return None


class Peer:
    def __init__(self, *, queries: Any, watch: DrainWatch, count: asyncpg.Connection) -> None:
        self.queries = queries
        self.watch = watch
        self._count = count

    async def completed(self, entrypoint: str) -> int:
        return int(
            await self._count.fetchval(
                f"SELECT count(*) FROM {QUEUE_TABLE}_log "
                "WHERE entrypoint = $1 AND status = 'successful'",
                entrypoint,
            )
        )

    async def warmup(self, worker: bench.Proc) -> None:
        if worker.popen.poll() is not None:
            raise RuntimeError(f"{worker.name} exited with {worker.popen.returncode}")
        await self.queries.enqueue("noop", None)
        if await self.watch.wait_empty(limit=60) is None:
            raise RuntimeError(f"{worker.name} did not run a job:\n{bench.tail(worker.log_path)}")

    async def sequential(self, entrypoint: str, last: str, n: int) -> bench.PhaseResult:
        """One job (or chain) at a time: enqueue, wait until it is complete, repeat."""
        lat: list[float] = []
        enq: list[float] = []
        before = await self.completed(last)
        start = time.perf_counter()
        for _ in range(n):
            t0 = time.perf_counter()
            await self.queries.enqueue(entrypoint, None)
            enq.append(time.perf_counter() - t0)
            end = await self.watch.wait_empty(limit=30)
            if end is None:
                break
            lat.append(end - t0)
        wall = time.perf_counter() - start
        done = await self.completed(last) - before
        r = bench.PhaseResult(f"pgqueuer {entrypoint} sequential", n, done, wall, lat, 0)
        r.note = f"enqueue alone: p50 {1000 * statistics.median(enq):.1f} ms"
        return r

    async def bulk(
        self, entrypoint: str, last: str, n: int, chunk: int, wait: float
    ) -> bench.PhaseResult:
        """Enqueue n jobs in batches as fast as they are accepted; time until all complete."""
        before = await self.completed(last)
        start = time.perf_counter()
        sent = 0
        while sent < n:
            size = min(chunk, n - sent)
            await self.queries.enqueue([entrypoint] * size, [None] * size, [0] * size)
            sent += size
        end = await self.watch.wait_empty(limit=wait, min_interval=BULK_CHECK_INTERVAL)
        wall = (end or time.perf_counter()) - start
        done = await self.completed(last) - before
        return bench.PhaseResult(f"pgqueuer {entrypoint} bulk", n, done, wall, [], 0)


async def run_peer(args: argparse.Namespace, h: bench.Harness) -> int:
    from pgqueuer import Queries

    info = await shared_pg.server_info(args.database_url)
    print(f"database: shared server (--database-url): {info.describe()}", flush=True)
    pg_pid_file = await shared_pg.postmaster_pid_file(args.database_url)
    name = await shared_pg.create_database(args.database_url, "pgqueuer_bench")
    h.databases.append((args.database_url, name))
    url = shared_pg.with_database(args.database_url, name)
    conns = [await asyncpg.connect(url) for _ in range(3)]
    enqueue_conn, listen_conn, query_conn = conns
    queries = Queries.from_asyncpg_connection(enqueue_conn)
    await queries.install()
    watch = DrainWatch(listen=listen_conn, query=query_conn)
    await watch.start()
    peer = Peer(queries=queries, watch=watch, count=query_conn)
    pg_cpu = bench.MemoryMonitor(os.getpid(), pg_pid_file)
    results: dict[str, bench.PhaseResult] = {}
    env = bench.child_env()

    def spawn(batch_size: int, index: int) -> bench.Proc:
        return h.spawn(
            f"consumer-{batch_size}-{index}",
            [
                *(sys.executable, SCRIPT, "--role", "consumer", "--url", url),
                *("--batch-size", str(batch_size), "--pool-size", str(args.pool_size)),
            ],
            env=env,
            stdout_pipe=True,
        )

    async def phase(key: str, run: Any, workers: list[bench.Proc]) -> None:
        pg0 = pg_cpu.cpu()[1]
        w0 = sum(bench.tree_cpu(w.popen.pid) for w in workers)
        r: bench.PhaseResult = await run
        r.cpu_pg = pg_cpu.cpu()[1] - pg0
        r.cpu_worker = sum(bench.tree_cpu(w.popen.pid) for w in workers) - w0
        bench.print_phase(r)
        results[key] = r

    try:
        # ---- unloaded latency: one consumer, batch size 1
        seq = spawn(1, 0)
        await asyncio.to_thread(bench.read_ready, seq, 60)
        print("\npgqueuer consumer (1 process, batch size 1) for unloaded latency", flush=True)
        bench.print_header()
        await peer.warmup(seq)
        await phase("noop_seq", peer.sequential("noop", "noop", args.low_rate), [seq])
        await phase("chain_seq", peer.sequential("a", "c", max(1, args.low_rate // 4)), [seq])
        h.stop(seq)

        # ---- throughput: the configuration that gave pgqueuer its best rates here
        workers = [spawn(args.batch_size, i) for i in range(args.consumers)]
        for w in workers:
            await asyncio.to_thread(bench.read_ready, w, 60)
        print(
            f"\npgqueuer consumers ({args.consumers} processes, batch size {args.batch_size}, "
            f"pool of {args.pool_size}); enqueue in batches of {args.chunk}",
            flush=True,
        )
        bench.print_header()
        await peer.warmup(workers[0])
        await peer.bulk("noop", "noop", min(500, args.jobs), args.chunk, 60)  # warm-up
        await phase(
            "noop_bulk",
            peer.bulk("noop", "noop", args.jobs, args.chunk, args.timeout),
            workers,
        )
        await phase(
            "chain_bulk",
            peer.bulk("a", "c", args.chains, args.chunk, args.timeout),
            workers,
        )
        for w in workers:
            h.stop(w)
    finally:
        for conn in conns:
            await conn.close()

    print(f"\nsummary ({info.describe()})")
    print(f"  pgqueuer no-op jobs/s         {results['noop_bulk'].rate:10.1f}/s")
    print(f"  pgqueuer 3-step chains/s      {results['chain_bulk'].rate:10.1f}/s")
    print(f"  pgqueuer p50 unloaded         {results['noop_seq'].pct(50):10.1f} ms")
    print(f"  pgqueuer chain p50 unloaded   {results['chain_seq'].pct(50):10.1f} ms")
    incomplete = [r.name for r in results.values() if r.done < r.n]
    if incomplete:
        print(f"  incomplete phases: {', '.join(incomplete)}")
    if args.json:
        out: dict[str, Any] = {
            k: {"rate": v.rate, "p50_ms": v.pct(50), "p95_ms": v.pct(95), "n": v.n, "done": v.done}
            for k, v in results.items()
        }
        out["server"] = info.as_dict()
        await asyncio.to_thread(Path(args.json).write_text, json.dumps(out, indent=2))
    return 1 if incomplete else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--database-url", metavar="URL", default="", help="the shared server")
    p.add_argument("--jobs", type=int, default=None, help="no-op jobs in the bulk phase")
    p.add_argument("--chains", type=int, default=None, help="3-step chains (default jobs/5)")
    p.add_argument("--low-rate", type=int, default=None, help="sequential jobs for latency")
    p.add_argument("--quick", action="store_true", help="small sizes")
    p.add_argument("--chunk", type=int, default=500, help="jobs per enqueue call")
    p.add_argument("--consumers", type=int, default=2, help="consumer processes")
    p.add_argument("--batch-size", type=int, default=100, help="consumers' dequeue batch size")
    p.add_argument("--pool-size", type=int, default=10, help="connections per consumer")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait per phase")
    p.add_argument("--json", metavar="FILE", default=None, help="also write figures as JSON")
    p.add_argument("--role", choices=["bench", "consumer"], default="bench", help=argparse.SUPPRESS)
    p.add_argument("--url", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.jobs is None:
        args.jobs = 1000 if args.quick else 10000
    if args.chains is None:
        args.chains = max(1, args.jobs // 5)
    if args.low_rate is None:
        args.low_rate = 40 if args.quick else 200
    if args.role == "bench" and not args.database_url:
        p.error("--database-url is required (start a server with tests/bench/pg_server.py)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "consumer":
        asyncio.run(
            consumer_main(url=args.url, batch_size=args.batch_size, pool_size=args.pool_size)
        )
        return 0
    return bench.run_with_harness(run_peer, args, prefix="pgqueuer-bench-", keep=False)


if __name__ == "__main__":
    sys.exit(main())
