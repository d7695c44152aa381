"""An official hatchet-sdk worker serving some of the e2e workflows.

    python worker.py --name NAME --workflows e2e-echo,e2e-dag [--slots N] [--durable-slots N]
                     [--label K=V ...]

The client settings come from the environment the test gives it (``HATCHET_CLIENT_*``,
health check enabled on a free port); ``E2E_WORKER_NAME`` and ``E2E_MARK_DIR`` are read by
the task bodies (see ``e2e_workflows``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from condition_workflows import define_conditions
from dashboard_workflows import define_dashboard
from durable_workflows import define_durable
from e2e_workflows import define
from hatchet_sdk import Hatchet
from placement_workflows import define_placement
from policy_workflows import define_policies


def label(text: str) -> tuple[str, str | int]:
    """``K=V``; a V of digits is an int label (the comparators other than EQUAL need one)."""
    key, _, value = text.partition("=")
    return key, int(value) if value.lstrip("-").isdigit() else value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--workflows", required=True, help="comma-separated workflow names")
    parser.add_argument("--slots", type=int, default=10)
    parser.add_argument("--durable-slots", type=int, default=None, help="SDK default if unset")
    parser.add_argument("--label", action="append", default=[], type=label)
    args = parser.parse_args()

    os.environ["E2E_WORKER_NAME"] = args.name
    hatchet = Hatchet()
    available = {
        **define(hatchet),
        **define_placement(hatchet),
        **define_policies(hatchet),
        **define_conditions(hatchet),
        **define_dashboard(hatchet),
        **define_durable(hatchet),
    }
    wanted = [w.strip() for w in args.workflows.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in available]
    if unknown:
        parser.error(f"unknown workflows: {unknown}; known: {sorted(available)}")
    worker = hatchet.worker(
        args.name,
        slots=args.slots,
        durable_slots=args.durable_slots,
        workflows=[available[w] for w in wanted],
        labels=dict(args.label) or None,
    )
    worker.start()


if __name__ == "__main__":
    main()
