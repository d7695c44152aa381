"""``api/grpc/lanes.py``: a stream's work side by side, one lane's in order, bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from hewer.engine.api.grpc.lanes import Lanes


def recorder(log: list[str], name: str, gate: asyncio.Event) -> Callable[[], Awaitable[None]]:
    async def work() -> None:
        log.append(f"{name} start")
        await gate.wait()
        log.append(f"{name} end")

    return work


async def test_one_lanes_work_runs_in_order_while_other_lanes_run_beside_it() -> None:
    lanes = Lanes(limit=10)
    log: list[str] = []
    gate_a1, gate_a2, gate_b = asyncio.Event(), asyncio.Event(), asyncio.Event()
    lanes.submit("a", recorder(log, "a1", gate_a1))
    lanes.submit("a", recorder(log, "a2", gate_a2))
    lanes.submit("b", recorder(log, "b", gate_b))
    await asyncio.sleep(0.01)
    assert log == ["a1 start", "b start"]  # a2 waits for a1, b does not
    gate_a2.set()
    gate_b.set()
    await asyncio.sleep(0.01)
    assert log == ["a1 start", "b start", "b end"]
    gate_a1.set()
    await lanes.drain()
    assert log == ["a1 start", "b start", "b end", "a1 end", "a2 start", "a2 end"]


async def test_a_failed_piece_of_work_does_not_stop_its_lane() -> None:
    lanes = Lanes(limit=2)
    done: list[str] = []

    async def fails() -> None:
        raise RuntimeError("boom")

    async def after() -> None:
        done.append("after")

    lanes.submit("a", fails)
    lanes.submit("a", after)
    await lanes.drain()
    assert done == ["after"]


async def test_at_most_limit_pieces_run_at_once() -> None:
    lanes = Lanes(limit=2)
    running, most = 0, 0
    gate = asyncio.Event()

    async def work() -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await gate.wait()
        running -= 1

    for lane in "abcde":
        lanes.submit(lane, work)
    await asyncio.sleep(0.01)
    assert running == 2
    gate.set()
    await lanes.drain()
    assert most == 2


async def test_cancel_stops_lane_work_and_tracked_work() -> None:
    lanes = Lanes(limit=2)
    forever = asyncio.Event()
    lanes.submit("a", forever.wait)
    tracked = asyncio.create_task(forever.wait())
    lanes.track(tracked)
    await asyncio.sleep(0.01)
    lanes.cancel()
    await lanes.drain()
    assert tracked.cancelled()
