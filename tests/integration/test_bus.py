"""The LISTEN/NOTIFY bus between replicas, and the run subscriptions it feeds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from tests.integration.harness import Replica, drain, eventually

from hewer.engine.services.subscriptions import EventWatchers, ResultWatchers, RunResult


@pytest_asyncio.fixture
async def replicas(dsn: str) -> AsyncIterator[tuple[Replica, Replica]]:
    first = await Replica.start(dsn)
    second = await Replica.start(dsn)
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


def collect(replica: Replica, kind: str) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    replica.bus.subscribe(kind, received.append)
    return received


async def test_messages_reach_every_replica_in_order(replicas: tuple[Replica, Replica]) -> None:
    first, second = replicas
    heard_here, heard_there = collect(first, "probe"), collect(second, "probe")
    for i in range(30):
        await first.bus.publish(None, {"t": "probe", "i": i})
    await eventually(lambda: len(heard_there) == 30 and len(heard_here) == 30)
    assert [m["i"] for m in heard_there] == list(range(30))
    assert [m["i"] for m in heard_here] == list(range(30))


async def test_messages_sent_in_a_transaction_arrive_only_if_it_commits(
    replicas: tuple[Replica, Replica],
) -> None:
    first, second = replicas
    heard = collect(second, "probe")
    with pytest.raises(RuntimeError):
        async with first.repo.transaction() as conn:
            await first.bus.publish(conn, {"t": "probe", "what": "rolled back"})
            raise RuntimeError("abort")
    async with first.repo.transaction() as conn:
        await first.bus.publish(conn, {"t": "probe", "what": "committed"})
        await asyncio.sleep(0.2)
        assert heard == []  # not before the commit
    await eventually(lambda: bool(heard))
    await first.bus.publish(None, {"t": "probe", "what": "marker"})
    await eventually(lambda: len(heard) == 2)
    assert [m["what"] for m in heard] == ["committed", "marker"]


async def test_a_message_over_the_notify_limit_arrives_whole(
    replicas: tuple[Replica, Replica],
) -> None:
    first, second = replicas
    heard = collect(second, "probe")
    big = "x" * 20_000  # NOTIFY payloads stop at 8000 bytes
    await first.bus.publish(None, {"t": "probe", "body": big})
    await eventually(lambda: bool(heard))
    assert heard == [{"t": "probe", "body": big}]


async def test_a_multi_message_is_dispatched_item_by_item(
    replicas: tuple[Replica, Replica],
) -> None:
    first, second = replicas
    seen: list[str] = []

    async def slow_handler(message: dict[str, Any]) -> None:
        await asyncio.sleep(0.01)
        seen.append(f"a{message['i']}")

    second.bus.subscribe("a", slow_handler)
    second.bus.subscribe("b", lambda message: seen.append(f"b{message['i']}"))
    await first.bus.publish(
        None, {"t": "multi", "m": [{"t": "a", "i": 1}, {"t": "b", "i": 2}, {"t": "a", "i": 3}]}
    )
    await eventually(lambda: len(seen) == 3)
    assert seen == ["a1", "b2", "a3"]


async def test_what_a_replica_echoed_itself_is_not_delivered_to_it_again(
    replicas: tuple[Replica, Replica],
) -> None:
    first, second = replicas
    here = {kind: collect(first, kind) for kind in ("queue", "probe")}
    there = {kind: collect(second, kind) for kind in ("queue", "probe")}
    wake = {"t": "queue", "tenant": "t1", "delay": 0}
    message = {"t": "multi", "m": [wake, {"t": "probe", "i": 1}]}
    async with first.repo.transaction() as conn:
        await first.bus.publish(conn, message, echoed=True)
    first.bus.echo_locally(message)
    await first.bus.publish(None, {"t": "probe", "i": 2})  # a marker: the first has arrived
    await eventually(lambda: len(here["probe"]) == 2 and len(there["probe"]) == 2)
    # the echo delivered the wake-up here, the NOTIFY only the rest; the other replica gets all
    assert here["queue"] == [wake]
    assert there["queue"] == [wake]
    assert [m["i"] for m in here["probe"]] == [1, 2]


# -- subscriptions ------------------------------------------------------------------------------


SOLO = {"name": "solo", "tasks": [{"readable_id": "run", "action": "solo:run"}]}


async def test_a_result_watcher_on_one_replica_hears_a_run_finish_on_another(
    replicas: tuple[Replica, Replica],
) -> None:
    first, second = replicas
    tenant = await first.repo.ensure_tenant("tenant-a")
    await first.register(tenant, SOLO)
    results = ResultWatchers(second.repo)  # no sweep started: only the bus can answer
    events = EventWatchers()
    second.bus.subscribe("run", results.on_bus)
    second.bus.subscribe("run", events.on_run_finished)
    second.bus.subscribe("event", events.on_event)

    worker = await first.connect_worker(tenant, ["solo:run"])
    run_id = await first.trigger(tenant, "solo")
    inbox: asyncio.Queue[RunResult] = asyncio.Queue()
    results.watch(run_id, inbox, tenant_id=tenant)
    live = events.watch(run_id)
    assert inbox.empty()

    await first.scheduler.run_round(tenant)
    drain(worker)
    await first.lifecycle.started(tenant_id=tenant, task_id=run_id, retry_count=0)
    await first.lifecycle.completed(
        tenant_id=tenant, task_id=run_id, retry_count=0, output='{"answer": 42}'
    )

    result = await asyncio.wait_for(inbox.get(), timeout=5)
    assert result.run_id == run_id
    ((task),) = result.tasks
    assert (task.task_id, task.readable_id, task.status, task.output) == (
        run_id,
        "run",
        "COMPLETED",
        '{"answer": 42}',
    )
    kinds: list[tuple[str, str]] = []
    while len(kinds) < 3:
        event = await asyncio.wait_for(live.get(), timeout=5)
        kinds.append((event.kind, event.payload))
    assert kinds == [
        ("STARTED", ""),
        ("COMPLETED", '{"answer": 42}'),
        ("RUN_COMPLETED", ""),
    ]
    # each watcher hears a run once
    await first.bus.publish(None, {"t": "run", "run": run_id, "status": "COMPLETED"})
    await asyncio.sleep(0.2)
    assert inbox.empty()


async def test_watching_a_finished_run_answers_at_once(
    replicas: tuple[Replica, Replica],
) -> None:
    first, _ = replicas
    tenant = await first.repo.ensure_tenant("tenant-a")
    await first.register(tenant, SOLO)
    run_id = await first.trigger(tenant, "solo")
    await first.control.cancel(tenant_id=tenant, external_ids=[run_id])
    results = ResultWatchers(first.repo)
    inbox: asyncio.Queue[RunResult] = asyncio.Queue()
    results.watch(run_id, inbox, tenant_id=tenant)
    result = await asyncio.wait_for(inbox.get(), timeout=5)
    assert [t.status for t in result.tasks] == ["CANCELLED"]
    # another tenant watching the same id is never answered
    stranger: asyncio.Queue[RunResult] = asyncio.Queue()
    results.watch(run_id, stranger, tenant_id=await first.repo.ensure_tenant("tenant-b"))
    await asyncio.sleep(0.3)
    assert stranger.empty()


async def test_the_sweep_answers_when_the_signal_was_missed(
    replicas: tuple[Replica, Replica],
) -> None:
    first, second = replicas
    tenant = await first.repo.ensure_tenant("tenant-a")
    await first.register(tenant, SOLO)
    run_id = await first.trigger(tenant, "solo")
    results = ResultWatchers(second.repo)  # not subscribed to the bus at all
    inbox: asyncio.Queue[RunResult] = asyncio.Queue()
    results.watch(run_id, inbox, tenant_id=tenant)
    results.start()
    try:
        await first.control.cancel(tenant_id=tenant, external_ids=[run_id])
        result = await asyncio.wait_for(inbox.get(), timeout=5)
        assert result.run_id == run_id
    finally:
        await results.stop()


class _NoResultReads:
    """A repository whose run results must not be read (everything else passes through)."""

    def __init__(self, repo: Any) -> None:
        self._repo = repo

    def __getattr__(self, name: str) -> Any:
        return getattr(self._repo, name)

    async def run_results(self, run_ids: list[str]) -> Any:
        raise AssertionError(f"run results read for {run_ids}")


async def test_the_replica_that_finishes_a_single_task_run_answers_from_the_echo(
    replicas: tuple[Replica, Replica],
) -> None:
    first, _ = replicas
    tenant = await first.repo.ensure_tenant("tenant-a")
    await first.register(tenant, SOLO)
    results = ResultWatchers(_NoResultReads(first.repo))  # type: ignore[arg-type]
    first.bus.subscribe("run", results.on_bus)
    worker = await first.connect_worker(tenant, ["solo:run"])
    run_id = await first.trigger(tenant, "solo")
    inbox: asyncio.Queue[RunResult] = asyncio.Queue()
    results.watch(run_id, inbox, tenant_id=tenant)
    stranger: asyncio.Queue[RunResult] = asyncio.Queue()
    results.watch(run_id, stranger, tenant_id=await first.repo.ensure_tenant("tenant-b"))
    await first.scheduler.run_round(tenant)
    drain(worker)
    await first.lifecycle.completed(
        tenant_id=tenant, task_id=run_id, retry_count=0, output='{"answer": 42}'
    )
    result = await asyncio.wait_for(inbox.get(), timeout=5)
    ((task),) = result.tasks
    assert (task.task_id, task.readable_id, task.status, task.output, task.error) == (
        run_id,
        "run",
        "COMPLETED",
        '{"answer": 42}',
        None,
    )
    assert (await first.run_row(run_id))["status"] == "COMPLETED"
    await asyncio.sleep(0.3)  # the NOTIFY arrives too: nothing is sent twice, or to B
    assert inbox.empty() and stranger.empty()
