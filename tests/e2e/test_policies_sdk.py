"""Concurrency and rate limits with real SDK workers and two engine replicas: what the
official suite does not prove.

The session's engine (``hewer dev``) is replica ``a``; replica ``b`` is ``hewer serve`` on
the same embedded PostgreSQL. Every replica schedules only the workers whose streams it
holds, so with a worker on each the two replicas compete for one queue, one set of
concurrency slots and one rate-limit bucket; triggers go through both. Outcomes are read
from what the engine recorded over REST (a task's ASSIGNED event, its start and finish).

- round robin: ten runs of key A queued before one of key B, one worker with one slot:
  B starts second, not eleventh;
- a rate limit of 5 per second over 200 runs on two replicas (the leading replica's worker
  is paused a third of the way, so the other must take over its windows): no 1-second
  window (any ``[t, t+1)``) holds more than 5 assignments;
- ``max_runs=1`` per key over 60 runs of 6 keys on two replicas: no two runs of a key
  overlap (a run is assigned only after the key's previous run finished).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from e2e_support import Engine, WorkerProc, eventually, start_worker
from hatchet_sdk import Hatchet, RateLimitDuration
from hatchet_sdk.clients.rest.models.v1_task_event_type import V1TaskEventType
from hatchet_sdk.clients.rest.models.v1_task_status import V1TaskStatus
from hatchet_sdk.clients.rest.models.v1_task_summary import V1TaskSummary
from policy_workflows import (
    EXCLUSIVE,
    FAIR,
    RATE_KEY,
    RATE_PER_SECOND,
    RATED,
    Keyed,
    define_policies,
)
from replica_support import start_replica

pytestmark = pytest.mark.timeout(180)

RATED_RUNS = 100  # 20 one-second windows at 5/s: the suite keeps under its 10 minutes
EXCLUSIVE_KEYS = 6
EXCLUSIVE_RUNS_PER_KEY = 10


@pytest.fixture(scope="module")
def policies(hatchet: Hatchet) -> dict[str, Any]:
    return define_policies(hatchet)


@pytest.fixture(scope="module")
def replica(engine: Engine) -> Iterator[Engine]:
    """Replica ``b``: ``hewer serve`` on the session engine's database."""
    with start_replica(engine) as second:
        yield second


@pytest.fixture(scope="module")
def replica_policies(replica: Engine) -> dict[str, Any]:
    """The same workflows on a client of replica ``b``, to trigger through it."""
    return define_policies(replica.client())


@pytest.fixture(scope="module")
def crew(engine: Engine, replica: Engine, mark_dir: Path) -> Iterator[dict[str, WorkerProc]]:
    """Started together: ``fair`` (one slot, on ``a``) and one worker per replica."""
    suffix = uuid.uuid4().hex[:6]
    specs: dict[str, tuple[Engine, list[str], int]] = {
        "fair": (engine, [FAIR], 1),
        "a": (engine, [RATED, EXCLUSIVE], 10),
        "b": (replica, [RATED, EXCLUSIVE], 10),
    }
    with contextlib.ExitStack() as stack:
        crew = {
            key: stack.enter_context(
                start_worker(
                    on,
                    name=f"e2e-policy-{key}-{suffix}",
                    workflows=workflows,
                    mark_dir=mark_dir,
                    slots=slots,
                    wait=False,
                )
            )
            for key, (on, workflows, slots) in specs.items()
        }
        for worker in crew.values():
            worker.wait_healthy()
        yield crew


async def worker_id(hatchet: Hatchet, name: str) -> str:
    async def probe() -> str | None:
        rows = (await hatchet.workers.aio_list()).rows or []
        return next((w.metadata.id for w in rows if w.name == name), None)

    return await eventually(probe, within=15, what=f"worker {name} in the REST list")


async def finished_runs(
    hatchet: Hatchet, *, tag: str, since: datetime, count: int, within: float
) -> list[V1TaskSummary]:
    """The ``count`` runs tagged ``tag``, once every one of them has completed."""

    async def probe() -> list[V1TaskSummary] | None:
        listed = await hatchet.runs.aio_list(
            since=since, additional_metadata={"tag": tag}, limit=count + 50
        )
        rows = listed.rows or []
        failed = [r for r in rows if r.status in (V1TaskStatus.FAILED, V1TaskStatus.CANCELLED)]
        assert not failed, [(r.metadata.id, r.status, r.error_message) for r in failed]
        done = [r for r in rows if r.status == V1TaskStatus.COMPLETED]
        return rows if len(done) == count and len(rows) == count else None

    return await eventually(probe, within=within, interval=1.0, what=f"{count} runs of {tag}")


def epoch(moment: datetime | None) -> float:
    assert moment is not None
    return moment.timestamp()


def most_in_one_second(times: Sequence[float]) -> int:
    """The largest number of ``times`` in any half-open window ``[t, t + 1 s)``.

    A window holding the most always can start at one of the times.
    """
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, t + 1.0) - i for i, t in enumerate(ordered)), default=0)


async def assigned_at(hatchet: Hatchet, runs: Sequence[V1TaskSummary]) -> dict[str, float]:
    """When the engine assigned each run's task (its ASSIGNED event), by run id.

    The event is written in the claim transaction, at the moment the scheduler took the
    concurrency slot and debited the rate-limit bucket: a start the worker reports comes
    later, after the action's delivery (and the SDK may report it after the completion).
    """
    gate = asyncio.Semaphore(8)

    async def one(run_id: str) -> tuple[str, float]:
        async with gate:
            details = await hatchet.runs.aio_get(run_id)
        assigned = [
            e.timestamp for e in details.task_events if e.event_type == V1TaskEventType.ASSIGNED
        ]
        assert len(assigned) == 1, (run_id, details.task_events)
        return run_id, assigned[0].timestamp()

    return dict(await asyncio.gather(*(one(r.metadata.id) for r in runs)))


def output(run: V1TaskSummary) -> dict[str, Any]:
    return dict(run.output or {})


# -- round robin ---------------------------------------------------------------------------


async def test_round_robin_starts_a_lone_key_second(
    hatchet: Hatchet, policies: dict[str, Any], crew: dict[str, WorkerProc]
) -> None:
    wf = policies[FAIR]
    tag = uuid.uuid4().hex[:8]
    since = datetime.now(UTC) - timedelta(minutes=1)
    # queue everything while the only worker is paused, so the order is the engine's alone
    wid = await worker_id(hatchet, crew["fair"].name)
    await hatchet.workers.aio_pause(wid)
    try:
        await wf.aio_run_many(
            [
                wf.create_bulk_run_item(
                    Keyed(key=f"A-{tag}", seconds=0.1),
                    additional_metadata={"tag": tag, "n": str(n)},
                )
                for n in range(10)
            ],
            wait_for_result=False,
        )
        await wf.aio_run(
            Keyed(key=f"B-{tag}", seconds=0.1),
            additional_metadata={"tag": tag},
            wait_for_result=False,
        )
    finally:
        await hatchet.workers.aio_unpause(wid)
    began = time.monotonic()
    runs = await finished_runs(hatchet, tag=tag, since=since, count=11, within=90)
    elapsed = time.monotonic() - began

    started = sorted(runs, key=lambda r: epoch(r.started_at))
    order = [str(output(r)["key"]).split("-")[0] for r in started]
    print(f"\nround robin: start order {''.join(order)}, {elapsed:.1f} s after unpausing")
    assert order[:2] == ["A", "B"], order
    assert Counter(order) == {"A": 10, "B": 1}
    # one slot: each run started after the one before it finished
    for before, after in itertools.pairwise(started):
        assert epoch(after.started_at) >= epoch(before.finished_at), (before, after)


# -- rate limit across replicas ------------------------------------------------------------


async def test_a_rate_limit_holds_across_two_replicas(
    hatchet: Hatchet,
    policies: dict[str, Any],
    replica_policies: dict[str, Any],
    crew: dict[str, WorkerProc],
) -> None:
    await hatchet.rate_limits.aio_put(RATE_KEY, RATE_PER_SECOND, RateLimitDuration.SECOND)
    tag = uuid.uuid4().hex[:8]
    since = datetime.now(UTC) - timedelta(minutes=1)
    began = time.monotonic()
    for wf in (policies[RATED], replica_policies[RATED]):  # half through each replica
        await wf.aio_run_many(
            [
                wf.create_bulk_run_item(additional_metadata={"tag": tag})
                for _ in range(RATED_RUNS // 2)
            ],
            wait_for_result=False,
        )
    # Which replica wins a refilled window is a race that one of them may win every time
    # (it wakes on its own deferral's timer). So that both replicas debit the bucket for
    # certain, the worker that ran more is paused once a third of the runs are done: the
    # other replica then takes over from the first's window.
    completed = await eventually(
        lambda: completed_by_worker(hatchet, tag=tag, since=since, at_least=RATED_RUNS // 3),
        within=90,
        interval=1.0,
        what=f"{RATED_RUNS // 3} rate-limited runs",
    )
    leader = crew["a"] if completed[crew["a"].name] >= completed[crew["b"].name] else crew["b"]
    paused = await worker_id(hatchet, leader.name)
    await hatchet.workers.aio_pause(paused)
    try:
        runs = await finished_runs(hatchet, tag=tag, since=since, count=RATED_RUNS, within=150)
    finally:
        await hatchet.workers.aio_unpause(paused)
    elapsed = time.monotonic() - began

    assigned = list((await assigned_at(hatchet, runs)).values())
    densest = most_in_one_second(assigned)
    # the starts the workers reported, for the record: a fixed window refills right after
    # it ends, so two windows' starts may fall into one second once delivery jitter (tens
    # of milliseconds) is added
    reported = most_in_one_second([epoch(r.started_at) for r in runs])
    by_worker = Counter(str(output(r)["worker_name"]) for r in runs)
    print(
        f"\nrate limit {RATE_PER_SECOND}/s, {RATED_RUNS} runs on 2 replicas: {elapsed:.1f} s; "
        f"most assignments in any 1 s: {densest} (most reported starts: {reported}); "
        f"assignments span {max(assigned) - min(assigned):.1f} s; "
        f"runs per worker {dict(by_worker)} (before the pause {dict(completed)})"
    )
    assert densest <= RATE_PER_SECOND
    # 100 runs at 5 per second take 20 windows: the first and last assignment are 19 s apart
    assert max(assigned) - min(assigned) >= RATED_RUNS / RATE_PER_SECOND - 1 - 0.5
    assert set(by_worker) == {crew["a"].name, crew["b"].name}, by_worker


async def completed_by_worker(
    hatchet: Hatchet, *, tag: str, since: datetime, at_least: int
) -> Counter[str] | None:
    listed = await hatchet.runs.aio_list(
        since=since,
        additional_metadata={"tag": tag},
        statuses=[V1TaskStatus.COMPLETED],
        limit=RATED_RUNS + 50,
    )
    rows = listed.rows or []
    if len(rows) < at_least:
        return None
    return Counter(str(output(r)["worker_name"]) for r in rows)


# -- one run per key across replicas -------------------------------------------------------


async def test_one_run_per_key_across_two_replicas(
    hatchet: Hatchet,
    policies: dict[str, Any],
    replica_policies: dict[str, Any],
    crew: dict[str, WorkerProc],
) -> None:
    tag = uuid.uuid4().hex[:8]
    since = datetime.now(UTC) - timedelta(minutes=1)
    keys = [f"k{k}-{tag}" for k in range(EXCLUSIVE_KEYS)]
    items = [  # 0.2 to 0.5 s each
        Keyed(key=keys[n % EXCLUSIVE_KEYS], seconds=0.2 + 0.3 * ((n * 7) % 10) / 9)
        for n in range(EXCLUSIVE_KEYS * EXCLUSIVE_RUNS_PER_KEY)
    ]
    began = time.monotonic()
    halves = (items[::2], items[1::2])
    for wf, half in zip((policies[EXCLUSIVE], replica_policies[EXCLUSIVE]), halves, strict=True):
        await wf.aio_run_many(
            [wf.create_bulk_run_item(i, additional_metadata={"tag": tag}) for i in half],
            wait_for_result=False,
        )
    runs = await finished_runs(hatchet, tag=tag, since=since, count=len(items), within=120)
    elapsed = time.monotonic() - began
    assigned = await assigned_at(hatchet, runs)

    per_key: dict[str, list[V1TaskSummary]] = defaultdict(list)
    for r in runs:
        per_key[str(output(r)["key"])].append(r)
    assert sorted(per_key) == sorted(keys)
    for key, key_runs in per_key.items():
        ordered = sorted(key_runs, key=lambda r: assigned[r.metadata.id])
        for before, after in itertools.pairwise(ordered):
            # the engine gave the key's slot to the next run only after the previous one
            # finished, and the workers saw the same
            assert assigned[after.metadata.id] >= epoch(before.finished_at), (key, before, after)
            assert output(after)["started"] >= output(before)["finished"], (key, before, after)
    # the keys did run side by side, on both replicas' workers
    spans = [(assigned[r.metadata.id], epoch(r.finished_at)) for r in runs]
    widest = max(sum(1 for s, f in spans if s <= t < f) for t, _ in spans)
    by_worker = Counter(str(output(r)["worker_name"]) for r in runs)
    print(
        f"\nmax_runs=1 over {len(runs)} runs of {EXCLUSIVE_KEYS} keys on 2 replicas: "
        f"{elapsed:.1f} s; most runs at once {widest}; runs per worker {dict(by_worker)}"
    )
    assert 2 <= widest <= EXCLUSIVE_KEYS
    assert set(by_worker) == {crew["a"].name, crew["b"].name}, by_worker
