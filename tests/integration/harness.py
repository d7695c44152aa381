"""An engine replica assembled in-process, without gRPC or REST, for service-level tests.

:class:`Replica` wires the services the way ``hewer.engine.server.run_engine`` does (same
bus subscriptions, same cancel forwarding to the worker streams it holds) so tests drive
triggers, scheduling rounds, outcomes and timers directly and read the database.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from hewer.engine.db.repository import Record, Repository, create_pool
from hewer.engine.services.admission import Admission
from hewer.engine.services.bus import Bus
from hewer.engine.services.control import RunControl
from hewer.engine.services.definitions import Definitions
from hewer.engine.services.durable import DurableLog
from hewer.engine.services.enqueue import Enqueuer
from hewer.engine.services.lifecycle import Lifecycle
from hewer.engine.services.matches import Matches
from hewer.engine.services.metrics import METRICS
from hewer.engine.services.scheduler import Scheduler
from hewer.engine.services.timers import Timers
from hewer.engine.services.triggers import TriggerRequest, Triggers
from hewer.engine.services.workers import ActionMessage, WorkerHub, WorkerSession


@dataclass
class Replica:
    engine_id: str
    repo: Repository
    bus: Bus
    hub: WorkerHub
    definitions: Definitions
    lifecycle: Lifecycle
    triggers: Triggers
    control: RunControl
    scheduler: Scheduler
    timers: Timers
    admission: Admission
    matches: Matches
    durable: DurableLog

    @classmethod
    async def start(
        cls, dsn: str, *, heartbeat_timeout: float = 30.0, pool_size: int = 5
    ) -> Replica:
        repo = Repository(await create_pool(dsn, size=pool_size), observer=METRICS)
        bus = Bus(repo=repo, dsn=dsn)
        hub = WorkerHub()
        definitions = Definitions(repo)
        enqueuer = Enqueuer(repo=repo, bus=bus, definitions=definitions)
        lifecycle = Lifecycle(repo=repo, bus=bus, definitions=definitions, enqueuer=enqueuer)
        triggers = Triggers(repo=repo, bus=bus, definitions=definitions, enqueuer=enqueuer)
        control = RunControl(
            repo=repo,
            bus=bus,
            definitions=definitions,
            lifecycle=lifecycle,
            triggers=triggers,
            enqueuer=enqueuer,
        )
        admission = Admission(repo=repo, bus=bus, enqueuer=enqueuer)
        admission.canceller = control
        engine_id = f"engine-{uuid.uuid4()}"
        scheduler = Scheduler(repo=repo, hub=hub, engine_id=engine_id)
        lifecycle.scheduler = scheduler
        timers = Timers(repo=repo, lifecycle=lifecycle, heartbeat_timeout=heartbeat_timeout)
        matches = Matches(repo=repo, bus=bus, lifecycle=lifecycle, enqueuer=enqueuer)
        timers.matches = matches
        lifecycle.progression.matches = matches
        triggers.matches = matches
        durable = DurableLog(repo=repo, bus=bus, enqueuer=enqueuer, triggers=triggers)
        durable.matches = matches
        matches.durable = durable
        control.durable = durable
        matches.wake_timers = timers.wake
        replica = cls(
            engine_id=engine_id,
            repo=repo,
            bus=bus,
            hub=hub,
            definitions=definitions,
            lifecycle=lifecycle,
            triggers=triggers,
            control=control,
            scheduler=scheduler,
            timers=timers,
            admission=admission,
            matches=matches,
            durable=durable,
        )
        scheduler.on_undeliverable = replica._requeue_undeliverable
        bus.subscribe("queue", scheduler.on_bus)
        bus.subscribe("slots", scheduler.on_bus)
        bus.subscribe("resync", scheduler.on_bus)
        bus.subscribe("worker", replica.hub.on_bus)
        bus.subscribe("admit", admission.on_bus)
        bus.subscribe("resync", admission.on_bus)
        bus.subscribe("children", matches.on_children_bus)
        await bus.start()
        admission.start()
        return replica

    async def close(self) -> None:
        await self.admission.stop()
        await self.scheduler.stop()
        await self.timers.stop()
        await self.bus.close()
        await self.repo.close()

    async def _requeue_undeliverable(self, messages: list[ActionMessage]) -> None:
        for m in messages:
            await self.lifecycle.requeue_lost(
                tenant_id=m.tenant_id,
                task_id=m.task_id,
                retry_count=m.retry_count,
                reason="worker stream closed before the task was sent",
            )

    async def register(self, tenant_id: str, definition: dict[str, Any]) -> str:
        version_id, _ = await self.definitions.register(tenant_id=tenant_id, definition=definition)
        return version_id

    async def trigger(
        self,
        tenant_id: str,
        workflow: str,
        input: dict[str, Any] | None = None,
        **fields: Any,
    ) -> str:
        (run_id,) = await self.triggers.trigger(
            tenant_id=tenant_id,
            requests=[TriggerRequest(workflow_name=workflow, input=input or {}, **fields)],
        )
        return run_id

    async def connect_worker(
        self,
        tenant_id: str,
        actions: list[str],
        *,
        slots: dict[str, int] | None = None,
        name: str = "worker",
    ) -> WorkerSession:
        """Register a worker, mark it listening on this replica and attach its stream."""
        worker_id = str(uuid.uuid4())
        slot_config = slots or {"default": 100}
        await self.repo.insert_worker(
            worker_id=worker_id,
            tenant_id=tenant_id,
            name=name,
            actions=actions,
            slot_config=slot_config,
            labels={},
            runtime_info={},
        )
        session = WorkerSession(
            worker_id=worker_id,
            tenant_id=tenant_id,
            actions=frozenset(actions),
            slot_config=dict(slot_config),
        )
        self.hub.attach(session)
        assert await self.repo.worker_listening(
            tenant_id=tenant_id, worker_id=worker_id, engine_id=self.engine_id
        )
        return session

    async def task_row(self, task_id: str) -> Record:
        row = await self.repo.pool.fetchrow("SELECT * FROM tasks WHERE id = $1", task_id)
        assert row is not None, f"no task {task_id}"
        return row

    async def run_row(self, run_id: str) -> Record:
        row = await self.repo.pool.fetchrow("SELECT * FROM workflow_runs WHERE id = $1", run_id)
        assert row is not None, f"no run {run_id}"
        return row

    async def tasks_by_name(self, run_id: str) -> dict[str, Record]:
        rows = await self.repo.pool.fetch("SELECT * FROM tasks WHERE workflow_run_id = $1", run_id)
        return {r["readable_id"]: r for r in rows}

    async def events(self, task_id: str) -> list[tuple[str, int]]:
        rows = await self.repo.pool.fetch(
            "SELECT event_type, retry_count FROM task_events WHERE task_id = $1 ORDER BY id",
            task_id,
        )
        return [(r["event_type"], r["retry_count"]) for r in rows]


def drain(session: WorkerSession) -> list[ActionMessage]:
    """Every message waiting in a worker's outbox, oldest first."""
    messages = []
    while not session.outbox.empty():
        messages.append(session.outbox.get_nowait())
    return messages


async def next_message(session: WorkerSession, *, within: float = 5.0) -> ActionMessage:
    """The next message of a worker's outbox, waiting at most ``within`` seconds."""
    return await asyncio.wait_for(session.outbox.get(), timeout=within)


def payload(message: ActionMessage) -> dict[str, Any]:
    decoded = json.loads(message.payload)
    assert isinstance(decoded, dict)
    return decoded


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], *, within: float = 10.0, interval: float = 0.05
) -> None:
    """Wait until ``check()`` (plain or awaitable) is true, failing after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        outcome = check()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)


# a DAG whose child has two parents: siblings that finish at once must create it once
# (test_dag_hop, test_replicas)
FAN_IN = {
    "name": "fan-in",
    "tasks": [
        {"readable_id": "left", "action": "fan:left"},
        {"readable_id": "right", "action": "fan:right"},
        {"readable_id": "join", "action": "fan:join", "parents": ["left", "right"]},
    ],
}
