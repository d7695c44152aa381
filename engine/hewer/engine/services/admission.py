"""The admission stage in front of the queue: concurrency slots become queue items.

A pass for a tenant runs in one transaction under the tenant's advisory lock, so replicas
never admit past ``max_runs`` and never both cancel for one key. It reads the groups that
have slots ready, lets :func:`hewer.engine.core.concurrency.decide` choose, admits the
winners (a holder whose whole chain is admitted gets its queue items) and cancels the
losers of CANCEL_IN_PROGRESS and CANCEL_NEWEST in the same transaction, so a crash can
never leave a task neither queued nor cancelled. Finished holders free their slots through
the release triggers (migration 0006), which wake the pass with an ``admit`` message.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any, Protocol

import asyncpg

from hewer.engine.core.concurrency import Group, Slot, Strategy, decide
from hewer.engine.db.repository import Conn, Repository
from hewer.engine.services.bus import Bus
from hewer.engine.services.enqueue import Enqueuer
from hewer.engine.services.loops import DeadlineLoop

log = logging.getLogger(__name__)

SAFETY_TICK = 1.0  # seconds: back-offs ending, signals lost while the listener reconnected
MAX_ROUNDS = 8  # decide-apply rounds per pass (each admits one more position of chains)
# Hatchet's reason code first: SDK users match on it
CANCEL_REASONS = {
    Strategy.CANCEL_IN_PROGRESS: "CANCELLED_BY_CONCURRENCY_LIMIT: a newer run of its key won",
    Strategy.CANCEL_NEWEST: "CANCELLED_BY_CONCURRENCY_LIMIT: its key was already full",
}


class Canceller(Protocol):
    async def cancel(
        self, *, tenant_id: str, external_ids: list[str], reason: str, conn: Conn | None
    ) -> list[str]: ...


class Admission(DeadlineLoop):
    def __init__(self, *, repo: Repository, bus: Bus, enqueuer: Enqueuer) -> None:
        super().__init__(name="admission", max_sleep=SAFETY_TICK)
        self._repo = repo
        self._bus = bus
        self._enqueuer = enqueuer
        self.canceller: Canceller | None = None  # RunControl, set by the engine
        self._pending: set[str] = set()
        self._timers: set[asyncio.TimerHandle] = set()

    def on_bus(self, message: dict[str, Any]) -> None:
        if message.get("t") == "admit" and message.get("tenant"):
            tenant = str(message["tenant"])
            delay = float(message.get("delay", 0) or 0)
            if delay > 0:
                handle = asyncio.get_running_loop().call_later(delay, self.poke, tenant)
                self._timers.add(handle)
                if len(self._timers) > 1000:
                    self._timers = {h for h in self._timers if not h.cancelled()}
            else:
                self.poke(tenant)
        elif message.get("t") == "resync":
            self.wake()

    def poke(self, tenant_id: str) -> None:
        self._pending.add(tenant_id)
        self.wake()

    async def stop(self) -> None:
        for handle in self._timers:
            handle.cancel()
        await super().stop()

    async def run_once(self) -> None:
        """The tenants that were poked, else (the safety tick) every tenant with a slot
        ready: a retry's back-off ended, or a wake-up was lost while the listener
        reconnected."""
        tenants, self._pending = self._pending, set()
        if not tenants:
            tenants = set(await self._repo.tenants_waiting_admission())
        for tenant_id in sorted(tenants):
            try:
                await self.run_pass(tenant_id)
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                log.info("admission pass lost a lock race; trying again")
                self.poke(tenant_id)

    async def run_pass(self, tenant_id: str) -> int:
        """Admit what the tenant's concurrency keys allow; returns the holders admitted."""
        admitted_holders = 0
        queued = 0
        async with self._repo.transaction() as conn:
            await self._repo.lock_admission(conn, tenant_id)
            for _ in range(MAX_ROUNDS):
                rows = await self._repo.admission_candidates(conn, tenant_id)
                if not rows:
                    break
                groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
                for row in rows:
                    groups[(row["strategy_id"], row["key"])].append(row)
                decision = decide(
                    [
                        Group(
                            strategy=Strategy(members[-1]["strategy"]),
                            max_runs=max(m["max_runs"] for m in members),
                            slots=[
                                Slot(id=m["id"], priority=m["priority"], admitted=m["admitted"])
                                for m in members
                            ],
                        )
                        for members in groups.values()
                    ]
                )
                if not decision.admit and not decision.cancel:
                    break
                if decision.cancel:
                    await self._cancel_losers(conn, tenant_id, rows, set(decision.cancel))
                if decision.admit:
                    holders = await self._repo.admit_slots(conn, decision.admit)
                    admitted_holders += len(holders)
                    outcome = await self._enqueuer.admitted(
                        conn, tenant_id=tenant_id, holders=holders
                    )
                    queued += outcome.queued
            if queued:
                await self._bus.publish(
                    conn, {"t": "queue", "tenant": tenant_id, "delay": 0}, echoed=True
                )
        if queued:
            self._bus.echo_locally({"t": "queue", "tenant": tenant_id, "delay": 0})
        return admitted_holders

    async def _cancel_losers(
        self, conn: Conn, tenant_id: str, rows: list[Any], losers: set[int]
    ) -> None:
        if self.canceller is None:
            raise RuntimeError("admission has no canceller")
        by_reason: dict[str, list[str]] = defaultdict(list)
        for row in rows:
            if row["id"] in losers:
                reason = CANCEL_REASONS[Strategy(row["strategy"])]
                by_reason[reason].append(str(row["holder_id"]))
        for reason, holders in by_reason.items():
            # a holder is a task or a run: either names what to cancel; cancelling releases
            # the holder's slots (release triggers) inside this transaction
            await self.canceller.cancel(
                tenant_id=tenant_id, external_ids=holders, reason=reason, conn=conn
            )
        # a holder with nothing left to cancel (finishing as we speak) must not come back
        await self._repo.delete_concurrency_slots(conn, sorted(losers))
