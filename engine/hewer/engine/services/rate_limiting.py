"""Rate limits in the scheduler's claim transaction: check before assignment, debit after.

The buckets an assignment round needs are locked (in key order) in the transaction that
claims the queue items, so replicas never overspend a bucket. Items are offered in the
order the assignment takes them; one that does not fit every one of its buckets is
deferred to its bucket's refill (not claimed again every round) and the rest go on to
assignment. Only the items actually assigned are debited.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from hewer.engine.core.rate_limits import WINDOW_SECONDS, Bucket, Ledger, ResolvedLimit
from hewer.engine.db.repository import Conn, Record, Repository

# an item no refill can help (its bucket is missing, or smaller than its units) looks again
# after this long: someone may create or raise the limit meanwhile
RECHECK_SECONDS = 10.0


@dataclass(slots=True)
class Checked:
    allowed: list[Record]
    needs: dict[int, list[ResolvedLimit]] = field(default_factory=dict)  # queue id -> needs
    buckets: dict[str, Bucket] = field(default_factory=dict)  # as locked, before any debit
    now: float = 0.0
    next_refill_in: float | None = None  # seconds until the earliest deferred item is due


class RateLimitGate:
    def __init__(self, repo: Repository) -> None:
        self._repo = repo

    async def check(self, conn: Conn, *, tenant_id: str, rows: Sequence[Record]) -> Checked:
        needs = {
            int(r["id"]): [ResolvedLimit.from_json(x) for x in json.loads(r["rate_limits"])]
            for r in rows
            if r["rate_limits"]
        }
        if not needs:
            return Checked(allowed=list(rows))
        keys = sorted({n.key for item in needs.values() for n in item})
        locked = await self._repo.lock_rate_limits(conn, tenant_id=tenant_id, keys=keys)
        # the database's clock, as the buckets' windows are (none locked: every key unknown)
        now = float(locked[0]["now"]) if locked else await self._repo.database_now(conn)
        buckets = {r["key"]: _bucket(r) for r in locked}
        checked = Checked(allowed=[], needs=needs, buckets=buckets, now=now)
        ledger = Ledger(_copy(buckets), now=now)
        deferred: list[tuple[int, float, str]] = []
        for row in sorted(rows, key=lambda r: (-r["priority"], r["id"])):
            item_needs = needs.get(int(row["id"]))
            refusal = None if item_needs is None else ledger.take(item_needs)
            if refusal is None:
                checked.allowed.append(row)
                continue
            until = refusal.retry_at if refusal.retry_at is not None else now + RECHECK_SECONDS
            deferred.append((int(row["id"]), until, refusal.reason))
        if deferred:
            await self._repo.defer_rate_limited(
                conn,
                tenant_id=tenant_id,
                queue_ids=[d[0] for d in deferred],
                until=[d[1] for d in deferred],
                reasons=[d[2] for d in deferred],
            )
            checked.next_refill_in = max(0.0, min(d[1] for d in deferred) - checked.now)
        return checked

    async def debit(
        self, conn: Conn, *, tenant_id: str, checked: Checked, assigned: Sequence[int]
    ) -> None:
        """Take the units of the items that were assigned (a subset of those allowed)."""
        if not checked.needs:
            return
        ledger = Ledger(_copy(checked.buckets), now=checked.now)
        for queue_id in assigned:
            item_needs = checked.needs.get(queue_id)
            if item_needs is not None and ledger.take(item_needs) is not None:
                raise RuntimeError(f"queue item {queue_id} was allowed but does not fit")
        if not ledger.touched:
            return
        keys = sorted(ledger.touched)
        await self._repo.save_rate_limit_usage(
            conn,
            tenant_id=tenant_id,
            keys=keys,
            used=[ledger.buckets[k].used for k in keys],
            window_started=[ledger.buckets[k].window_started for k in keys],
        )


def _bucket(row: Record) -> Bucket:
    return Bucket(
        limit=int(row["limit_value"]),
        used=int(row["value"]),
        window_started=float(row["window_started"]),
        window=WINDOW_SECONDS[row["duration"]],
    )


def _copy(buckets: dict[str, Bucket]) -> dict[str, Bucket]:
    return {
        k: Bucket(limit=b.limit, used=b.used, window_started=b.window_started, window=b.window)
        for k, b in buckets.items()
    }
