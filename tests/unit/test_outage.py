from __future__ import annotations

import logging

import asyncpg
import pytest

from hewer.engine.services import outage
from hewer.engine.services.outage import OutageLog, is_database_unavailable, ride_out


def test_unavailable_errors() -> None:
    assert is_database_unavailable(ConnectionRefusedError())
    assert is_database_unavailable(asyncpg.CannotConnectNowError("starting"))
    assert is_database_unavailable(asyncpg.InterfaceError("connection is closed"))
    assert not is_database_unavailable(asyncpg.UniqueViolationError("dup"))
    assert not is_database_unavailable(ValueError("bad"))


def test_one_line_for_every_component_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hewer.engine.outage")
    loop, rpc = OutageLog("loop"), OutageLog("rpc")
    for _ in range(50):
        loop.failed(ConnectionRefusedError("refused"))
        rpc.failed(ConnectionRefusedError("refused"))
    assert len(caplog.records) == 1
    assert "database unavailable (noticed by loop)" in caplog.records[0].getMessage()
    assert loop.down and rpc.down
    loop.succeeded()
    assert "reachable again" in caplog.records[-1].getMessage()
    assert not rpc.down  # one outage for the process: over for every component
    rpc.succeeded()  # already up: nothing more
    assert len(caplog.records) == 2


def test_a_long_outage_logs_a_summary_each_interval(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="hewer.engine.outage")
    clock = [1000.0]
    monkeypatch.setattr(outage.time, "monotonic", lambda: clock[0])
    loop = OutageLog("loop")
    for _ in range(30):  # 30 s of one failure a second
        loop.failed(ConnectionRefusedError("refused"))
        clock[0] += 1.0
    loop.succeeded()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 + 2 + 1, messages
    assert "still unavailable after 10 s: 10 failures in loop" in messages[1]


async def test_ride_out_waits_for_the_database(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_sleep(_: float) -> None:
        return None

    monkeypatch.setattr(outage.asyncio, "sleep", no_sleep)
    calls = 0

    async def write() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise ConnectionRefusedError("down")
        return "stored"

    assert await ride_out(write, component="test") == "stored"
    assert calls == 4

    async def broken() -> str:
        raise ValueError("not an outage")

    with pytest.raises(ValueError):
        await ride_out(broken, component="test")

    async def down() -> str:
        raise ConnectionRefusedError("down")

    with pytest.raises(ConnectionRefusedError):
        await ride_out(down, component="test", max_seconds=0)
