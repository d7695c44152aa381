"""The bench's garbage-collector probe (``bench.py --gc-stats``), loaded by the engine
through PYTHONPATH; not part of Hewer.

Python imports ``sitecustomize`` at startup. In a process whose environment names
``HEWER_BENCH_GC_OUT`` this one times every collection (``gc.callbacks``) and writes a
JSON summary to that path every second: per generation, the collections, their seconds and
the longest pause; and when each full collection ran (since the process started) and how
long it took, so the engine's own collection at startup (server.settle_heap) is told
apart. The bench reads the last summary after its phases.
"""

from __future__ import annotations

import gc
import json
import os
import threading
import time
from typing import Any

_OUT = os.environ.get("HEWER_BENCH_GC_OUT")


def _install(out: str) -> None:
    stats = {g: {"collections": 0, "seconds": 0.0, "longest": 0.0} for g in (0, 1, 2)}
    full: list[tuple[float, float]] = []  # (seconds since start, pause) of each full collection
    born = time.perf_counter()
    started = [0.0]

    def on_collect(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took = time.perf_counter() - started[0]
        s = stats[info["generation"]]
        s["collections"] += 1
        s["seconds"] += took
        s["longest"] = max(s["longest"], took)
        if info["generation"] == 2:
            full.append((started[0] - born, took))

    def write_every_second() -> None:
        while True:
            time.sleep(1.0)
            summary = {"generations": stats, "thresholds": gc.get_threshold()}
            summary["frozen"] = gc.get_freeze_count()
            summary["full"] = full
            tmp = f"{out}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump(summary, f)
            os.replace(tmp, f"{out}.{os.getpid()}")

    gc.callbacks.append(on_collect)
    threading.Thread(target=write_every_second, name="gc-probe", daemon=True).start()


if _OUT:
    _install(_OUT)
