"""An official hatchet-sdk worker that believes the engine is older than v0.80, so its
durable tasks wait through the pre-eviction API (``RegisterDurableEvent`` and
``ListenForDurableEvent``), as SDK releases from before the durable-task stream do.

    python legacy_durable_worker.py --name NAME [the other options of worker.py, ignored]

The client settings come from the environment (``HATCHET_CLIENT_*``).
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

from hatchet_sdk import DurableContext, EmptyModel, Hatchet, UserEventCondition
from hatchet_sdk.worker import worker as sdk_worker
from hatchet_sdk.worker.worker import Worker

LEGACY_DURABLE = "e2e-legacy-durable"
LEGACY_EVENT = "e2e-legacy:approved"
PRE_EVICTION_ENGINE = "v0.79.0"


async def _old_engine(self: Worker) -> str:
    return PRE_EVICTION_ENGINE


def _notice(feature: str, message: str, *args: Any, **kwargs: Any) -> None:
    # SDK 1.37.5 fails one start in five on purpose once its pre-eviction fallback is past
    # its deprecation window; the SDK releases this worker stands in for do not
    print(f"deprecation notice ({feature}): {message}", flush=True)


def define_legacy(hatchet: Hatchet) -> Any:
    @hatchet.durable_task(name=LEGACY_DURABLE, execution_timeout=timedelta(seconds=60))
    async def legacy_durable(input: EmptyModel, ctx: DurableContext) -> dict[str, Any]:
        slept = await ctx.aio_sleep_for(timedelta(seconds=1))
        approved = await ctx.aio_wait_for(
            "approval",
            UserEventCondition(event_key=LEGACY_EVENT, expression="input.approved == true"),
        )
        return {
            "listener": type(ctx.durable_event_listener).__name__,
            "slept_seconds": slept.duration.total_seconds(),
            "approval": approved,
        }

    return legacy_durable


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    args, _ = parser.parse_known_args()  # start_worker passes worker.py's options too
    Worker._check_engine_version = _old_engine  # type: ignore[method-assign]
    sdk_worker.emit_deprecation_notice = _notice
    hatchet = Hatchet()
    worker = hatchet.worker(args.name, slots=5, workflows=[define_legacy(hatchet)])
    worker.start()


if __name__ == "__main__":
    main()
