"""The worker a WorkerPool's Pod runs in the autoscaling tests (started by the pod runner
of ``autoscale_harness``, with the Pod's environment as the kubelet would give it).

    python autoscale_worker.py

Serves the workflow named in ``HEWER_WORKER_WORKFLOWS`` with ``HEWER_WORKER_SLOTS`` slots;
the SDK reads its settings, and the pool/Pod worker labels, from ``HATCHET_CLIENT_*``. Each
task leaves ``<run id>.<attempt>.<pod>`` in ``E2E_MARK_DIR`` when it starts, then sleeps
``input.seconds``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from autoscale_workflow import define
from hatchet_sdk import Hatchet


def main() -> None:
    hatchet = Hatchet()
    workflow = define(hatchet, os.environ["HEWER_WORKER_WORKFLOWS"].split(",")[0])
    pod = os.environ.get("HEWER_POD_NAME", "?")
    slots = int(os.environ.get("HEWER_WORKER_SLOTS", "1"))
    hatchet.worker(f"pool-{pod}", slots=slots, workflows=[workflow]).start()


if __name__ == "__main__":
    main()
