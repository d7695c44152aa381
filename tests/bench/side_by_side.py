"""Hewer next to pgqueuer on one PostgreSQL server (a script, not a test).

    .venv/bin/python tests/bench/pg_server.py &            # prints URL; durable by default
    .venv/bin/python tests/bench/side_by_side.py --database-url URL [--rounds 3] [--tasks N]

Runs bench.py (``hewer serve``; the lean worker's sequential, bulk and DAG phases; no SDK
phase) and peer_pgqueuer.py alternately, ``--rounds`` times each, each run on a fresh
database of the same server. Prints the median of the rounds with min-max, the ratio
Hewer/pgqueuer, and issue 11's targets with PASS/MISS. See tests/bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# (label, unit, Hewer's key in bench.py's JSON, pgqueuer's key, figure, higher is better)
ROWS = [
    ("no-op throughput", "runs/s", "lean_bulk", "noop_bulk", "rate", True),
    ("3-task DAG / 3-step chain", "runs/s", "dag_bulk", "chain_bulk", "rate", True),
    ("unloaded p50, single task", "ms", "lean_seq", "noop_seq", "p50_ms", False),
    ("unloaded p50, 3-task sequential", "ms", "dag_seq", "chain_seq", "p50_ms", False),
]
P50_SINGLE_MS = 3.0
P50_DAG_MS = 8.0
RSS_MB = 300.0


@dataclass
class Series:
    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def show(self, digits: int) -> str:
        if not self.values:
            return "-"
        lo, hi = min(self.values), max(self.values)
        return f"{self.median:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def run_json(name: str, argv: list[str], out: Path, log: Path) -> dict[str, Any] | None:
    """Run one benchmark script; its figures from --json, or None if it failed."""
    started = time.perf_counter()
    with log.open("ab") as f:
        proc = subprocess.run([*argv, "--json", str(out)], stdout=f, stderr=f, check=False)
    took = time.perf_counter() - started
    if proc.returncode != 0 or not out.exists():
        print(f"  {name}: failed with status {proc.returncode} after {took:.0f}s (log {log})")
        return None
    figures: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    print(f"  {name}: done in {took:.0f}s", flush=True)
    return figures


def figure(runs: list[dict[str, Any]], key: str, field: str) -> Series:
    return Series([float(r[key][field]) for r in runs if key in r])


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(hewer: list[dict[str, Any]], peer: list[dict[str, Any]]) -> dict[str, Any]:
    server = (hewer or peer or [{}])[0].get("server", {})
    print(
        f"\nside by side: median of {max(len(hewer), len(peer))} rounds [min, max]; PostgreSQL "
        f"{server.get('version', '?')}, synchronous_commit={server.get('synchronous_commit')}, "
        f"fsync={server.get('fsync')}"
    )
    print(f"  {'':<34} {'Hewer':>24} {'pgqueuer':>24} {'Hewer/pgqueuer':>15}")
    table: dict[str, Any] = {"server": server}
    for label, unit, hkey, pkey, field, _higher in ROWS:
        h, p = figure(hewer, hkey, field), figure(peer, pkey, field)
        digits = 0 if unit == "runs/s" else 1
        ratio = h.median / p.median if h.values and p.values and p.median else float("nan")
        print(
            f"  {label + ' (' + unit + ')':<34} {h.show(digits):>24} {p.show(digits):>24} "
            f"{ratio:>14.2f}x"
        )
        table[label] = {"unit": unit, "hewer": h.values, "pgqueuer": p.values, "ratio": ratio}
    rss = Series([float(r["engine_peak_rss_mb"]) for r in hewer if "engine_peak_rss_mb" in r])
    print(f"  {'engine peak RSS (MB)':<34} {rss.show(0):>24} {'-':>24}")
    table["engine peak RSS"] = {"unit": "MB", "hewer": rss.values}

    lean, noop = figure(hewer, "lean_bulk", "rate"), figure(peer, "noop_bulk", "rate")
    dag, chain = figure(hewer, "dag_bulk", "rate"), figure(peer, "chain_bulk", "rate")
    p50, dag_p50 = figure(hewer, "lean_seq", "p50_ms"), figure(hewer, "dag_seq", "p50_ms")
    targets = [
        (
            f"lean throughput >= pgqueuer's: {verdict(lean.median >= noop.median)} "
            f"({lean.median:.0f} vs {noop.median:.0f} runs/s)"
        ),
        (
            f"3-task DAG >= pgqueuer 3-step chains: {verdict(dag.median >= chain.median)} "
            f"({dag.median:.0f} vs {chain.median:.0f} runs/s)"
        ),
        (
            f"unloaded p50 <= {P50_SINGLE_MS:.0f} ms: {verdict(p50.median <= P50_SINGLE_MS)} "
            f"({p50.median:.1f} ms)"
        ),
        (
            f"sequential 3-task DAG p50 <= {P50_DAG_MS:.0f} ms: "
            f"{verdict(dag_p50.median <= P50_DAG_MS)} ({dag_p50.median:.1f} ms)"
        ),
        (
            f"engine RSS <= {RSS_MB:.0f} MB: {verdict(rss.median <= RSS_MB)} "
            f"({max(rss.values, default=float('nan')):.0f} MB, worst round)"
        ),
    ]
    print("targets (issue 11): " + "; ".join(targets))
    table["targets"] = targets
    return table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--database-url", metavar="URL", required=True, help="the shared server")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tasks", type=int, default=10000, help="no-op runs (chains/DAGs: N/5)")
    p.add_argument("--low-rate", type=int, default=200, help="sequential runs for p50")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the table as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="side-by-side-", dir="/tmp"))
    sizes = ["--low-rate", str(args.low_rate)]
    hewer_argv = [
        *(sys.executable, str(HERE / "bench.py"), "--database-url", args.database_url),
        *("--tasks", str(args.tasks), "--sdk-tasks", "0", *sizes),
    ]
    peer_argv = [
        *(sys.executable, str(HERE / "peer_pgqueuer.py"), "--database-url", args.database_url),
        *("--jobs", str(args.tasks), *sizes),
    ]
    hewer: list[dict[str, Any]] = []
    peer: list[dict[str, Any]] = []
    print(
        f"machine: {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at start; logs in {tmp}",
        flush=True,
    )
    try:
        for i in range(1, args.rounds + 1):
            print(f"round {i} of {args.rounds}", flush=True)
            # alternate who goes first, so neither always runs on a server warmed by the other
            order = [("hewer", hewer_argv, hewer), ("pgqueuer", peer_argv, peer)]
            for name, cmd, into in order if i % 2 else reversed(order):
                figures = run_json(name, cmd, tmp / f"{name}-{i}.json", tmp / f"{name}.log")
                if figures is not None:
                    into.append(figures)
    except KeyboardInterrupt:
        print("\ninterrupted: the rounds so far", file=sys.stderr)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    table = report(hewer, peer)
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2))
    return 0 if len(hewer) == len(peer) == args.rounds else 1


if __name__ == "__main__":
    sys.exit(main())
