"""A durable task driven through ``DurableLog`` as the SDK drives the ``DurableTask`` stream,
for the durable integration tests (``test_durable.py``, ``test_durable_eviction.py``)."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from tests.integration.harness import Replica, drain

from hewer.engine.core.conditions import Action, Condition, ConditionKind
from hewer.engine.services.durable import Ref
from hewer.engine.services.events import Events, NewEvent
from hewer.engine.services.triggers import TriggerRequest
from hewer.engine.services.workers import ActionMessage, WorkerSession

_names = itertools.count()


def sleep(seconds: float, *, group: str = "") -> Condition:
    return Condition(
        kind=ConditionKind.SLEEP,
        action=Action.CREATE,
        or_group_id=group or f"g{next(_names)}",
        readable_data_key=f"sleep:{seconds}s",
        sleep_seconds=seconds,
        sleep_for=f"{seconds}s",
    )


def event(
    key: str, *, group: str = "", expression: str = "", scope: str = "", since: str = ""
) -> Condition:
    return Condition(
        kind=ConditionKind.USER_EVENT,
        action=Action.CREATE,
        or_group_id=group or f"g{next(_names)}",
        readable_data_key=key,
        expression=expression,
        event_key=key,
        event_scope=scope,
        events_since=since,
    )


@dataclass
class Flow:
    """One durable task run on a test worker, driven like the SDK drives the stream."""

    engine: Replica
    tenant: str
    worker: WorkerSession
    name: str
    run_id: str = ""
    task_id: str = ""
    invocation: int = 0
    # messages of the worker's outbox not taken yet (a round may start a child too)
    inbox: list[ActionMessage] = field(default_factory=list)

    @property
    def child(self) -> str:
        return f"{self.name}-child"

    async def start(self) -> Flow:
        self.run_id = await self.engine.trigger(self.tenant, self.name)
        await self.assign()
        self.task_id = self.run_id  # a single-task run's task has the run's id
        return self

    async def started(self, run_id: str) -> ActionMessage:
        """The message that started ``run_id`` on the worker, after a round if needed."""
        for _ in range(2):
            self.inbox += drain(self.worker)
            for message in self.inbox:
                if message.workflow_run_id == run_id:
                    self.inbox.remove(message)
                    return message
            await self.engine.scheduler.run_round(self.tenant)
        raise AssertionError(f"run {run_id} was not started")

    async def assign(self) -> None:
        """The next scheduling round hands this task to the worker: a new invocation."""
        message = await self.started(self.run_id)
        assert message.invocation_count is not None
        self.invocation = message.invocation_count

    async def memo(self, key: bytes) -> Any:
        return await self.engine.durable.memo(
            tenant_id=self.tenant,
            worker_id=self.worker.worker_id,
            task_id=self.task_id,
            invocation=self.invocation,
            key=key,
        )

    async def wait(self, *conditions: Condition) -> Ref:
        ack = await self.engine.durable.wait_for(
            tenant_id=self.tenant,
            worker_id=self.worker.worker_id,
            task_id=self.task_id,
            invocation=self.invocation,
            conditions=conditions,
            label=None,
        )
        return ack.ref

    async def spawn(self, *requests: TriggerRequest) -> list[tuple[Ref, str]]:
        return await self.engine.durable.trigger_runs(
            tenant_id=self.tenant,
            worker_id=self.worker.worker_id,
            task_id=self.task_id,
            invocation=self.invocation,
            requests=requests,
        )

    def child_request(self, **fields: Any) -> TriggerRequest:
        return TriggerRequest(
            workflow_name=fields.pop("workflow_name", self.child),
            input=fields.pop("input", {}),
            parent_task_id=self.task_id,
            **fields,
        )

    async def evict(self) -> None:
        await self.engine.durable.evict(
            tenant_id=self.tenant,
            worker_id=self.worker.worker_id,
            task_id=self.task_id,
            invocation=self.invocation,
            reason="test eviction",
        )

    async def delivered(self) -> list[tuple[int, int, Any]]:
        """(branch, node, decoded result) the running invocation may be handed now."""
        ready = await self.engine.durable.ready(tenant_id=self.tenant, task_id=self.task_id)
        assert ready is not None, "the task is not running"
        assert ready.invocation == self.invocation
        return [
            (
                c.ref.branch_id,
                c.ref.node_id,
                json.loads(c.result) if c.result else c.error_message,
            )
            for c in ready.completions
        ]

    async def status(self) -> str:
        return str((await self.engine.task_row(self.task_id))["status"])

    async def complete(self, output: str = "{}") -> None:
        row = await self.engine.task_row(self.task_id)
        await self.engine.lifecycle.completed(
            tenant_id=self.tenant,
            task_id=self.task_id,
            retry_count=int(row["retry_count"]),
            output=output,
        )


async def flow(engine: Replica, tenant: str, *, durable_slots: int = 10) -> Flow:
    name = f"durable-{next(_names)}"
    await engine.register(
        tenant,
        {"name": name, "tasks": [{"readable_id": "d", "action": f"{name}:d", "is_durable": True}]},
    )
    await engine.register(
        tenant, {"name": f"{name}-child", "tasks": [{"readable_id": "c", "action": f"{name}:c"}]}
    )
    worker = await engine.connect_worker(
        tenant, [f"{name}:d", f"{name}:c"], slots={"default": 10, "durable": durable_slots}
    )
    return Flow(engine=engine, tenant=tenant, worker=worker, name=name)


async def push(
    engine: Replica, tenant: str, key: str, payload: dict[str, Any], scope: str = ""
) -> None:
    events = Events(repo=engine.repo, triggers=engine.triggers)
    events.matches = engine.matches
    await events.push(
        tenant_id=tenant,
        events=[NewEvent(key=key, payload=payload, additional_metadata={}, scope=scope or None)],
    )


async def queue_items(engine: Replica, task_id: str) -> int:
    count = await engine.repo.pool.fetchval(
        "SELECT count(*) FROM queue_items WHERE task_id = $1", task_id
    )
    return int(count)


async def finish_child(f: Flow, run_id: str, output: str) -> None:
    """Run one child to completion on the flow's worker."""
    message = await f.started(run_id)
    await f.engine.lifecycle.completed(
        tenant_id=f.tenant, task_id=message.task_id, retry_count=0, output=output
    )


async def restore_to_new_invocation(f: Flow) -> None:
    """Evict the current invocation, restore it and assign it again (a replay)."""
    before = f.invocation
    await f.evict()
    await f.engine.control.restore(tenant_id=f.tenant, task_id=f.task_id)
    await f.assign()
    assert f.invocation == before + 1


async def delivered_nodes(f: Flow, nodes: list[int]) -> bool:
    return [node for _, node, _ in await f.delivered()] == nodes
