"""Idempotency keys at trigger time: derive each run's key, claim it, refuse duplicates.

:meth:`Idempotency.keys_for` runs before anything is written and raises
:class:`~hewer.engine.core.idempotency.IdempotencyKeyError` for a key that cannot be
derived. :meth:`Idempotency.claim` and :meth:`Idempotency.settle` run inside the
transaction that inserts the runs (``Triggers``), before and after the insert: the claim
table's ``INSERT ... ON CONFLICT`` decides between concurrent triggers on any replica, and
a rolled-back insert rolls its claims back with it. Releasing a STATUS key when its run
finishes is the database's job (the trigger of migration 0010), so no finishing path can
forget it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from hewer.engine.core.idempotency import (
    Collision,
    IdempotencyConfig,
    IdempotencyKeyError,
    InvalidIdempotencyConfig,
    first_of_each_key,
    idempotency_key,
    parse_idempotency,
)
from hewer.engine.db.repository import Conn, NewRun, Repository


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyClaim:
    run_id: str
    key: str
    config: IdempotencyConfig
    # a child spawn's "<parent task>.<child key>": a repeated spawn returns the first run
    dedupe_key: str | None = None


@dataclass(frozen=True, slots=True)
class ClaimResult:
    held: list[KeyClaim] = field(default_factory=list)
    collisions: list[Collision] = field(default_factory=list)


class Idempotency:
    def __init__(self, *, repo: Repository) -> None:
        self._repo = repo
        # versions never change once stored: their settings need no invalidation
        self._configs: dict[str, IdempotencyConfig | None] = {}

    async def config(
        self, version_id: str, *, conn: Conn | None = None
    ) -> IdempotencyConfig | None:
        if version_id in self._configs:
            return self._configs[version_id]
        raw = await self._repo.version_idempotency_config(version_id, conn=conn)
        try:
            config = parse_idempotency(f"version {version_id}", {"idempotency": raw})
        except InvalidIdempotencyConfig as exc:
            # stored before registration checked it: refuse its triggers, do not ignore it
            raise IdempotencyKeyError(str(exc)) from None
        self._configs[version_id] = config
        return config

    async def keys_for(self, runs: Sequence[NewRun]) -> list[KeyClaim]:
        """The key of every run whose workflow version has idempotency, in run order."""
        configs = {v: await self.config(v) for v in {r.version_id for r in runs}}
        if not any(configs.values()):
            return []  # the common case: one dict lookup per version of the call
        claims: list[KeyClaim] = []
        for run in runs:
            config = configs[run.version_id]
            if config is None:
                continue
            key = idempotency_key(
                config,
                input=json.loads(run.input_json),
                additional_metadata=json.loads(run.metadata_json),
            )
            claims.append(
                KeyClaim(run_id=run.id, key=key, config=config, dedupe_key=run.dedupe_key)
            )
        return claims

    async def claim(self, conn: Conn, *, tenant_id: str, claims: Sequence[KeyClaim]) -> ClaimResult:
        """Claim the keys in ``conn``'s transaction; the runs of ``collisions`` must not be
        inserted. Within one call the earliest request of a key wins."""
        spawns = [c.run_id for c in claims if c.dedupe_key]
        if spawns:
            # a repeated child spawn gets its first run back from the insert: no new claim
            spawned = await self._repo.spawned_dedupe_keys(
                conn, tenant_id=tenant_id, run_ids=spawns
            )
            claims = [c for c in claims if c.dedupe_key not in spawned]
        if not claims:
            return ClaimResult()
        firsts, repeats = first_of_each_key([c.key for c in claims])
        candidates = [claims[i] for i in firsts]
        # rows are locked in key order, so two bulk calls sharing keys cannot deadlock
        ordered = sorted(candidates, key=lambda c: c.key)
        won = await self._repo.claim_idempotency_keys(
            conn,
            tenant_id=tenant_id,
            keys=[c.key for c in ordered],
            run_ids=[c.run_id for c in ordered],
            release_on_finish=[c.config.release_on_finish for c in ordered],
            ttl_ms=[c.config.ttl_ms for c in ordered],
        )
        lost = [c.key for c in candidates if c.key not in won]
        holders = (
            await self._repo.idempotency_key_holders(conn, tenant_id=tenant_id, keys=lost)
            if lost
            else {}
        )
        for c in candidates:
            if c.key in won:
                holders[c.key] = c.run_id
            elif c.key not in holders:
                # the claim's row lock keeps the holder in place until this transaction ends
                raise RuntimeError(f"idempotency key {c.key!r} was neither claimed nor held")
        result = ClaimResult(held=[c for c in candidates if c.key in won])
        for position, c in enumerate(claims):
            if position in repeats or c.key not in won:
                result.collisions.append(
                    Collision(key=c.key, requested_run_id=c.run_id, existing_run_id=holders[c.key])
                )
        return result

    async def settle(
        self, conn: Conn, *, tenant_id: str, held: Sequence[KeyClaim], created: set[str]
    ) -> None:
        """After the insert: record each new run's key; drop claims of runs not inserted."""
        made = [c for c in held if c.run_id in created]
        if made:
            await self._repo.mark_idempotent_runs(
                conn, run_ids=[c.run_id for c in made], keys=[c.key for c in made]
            )
        gone = [c.run_id for c in held if c.run_id not in created]
        if gone:
            await self._repo.release_idempotency_claims(conn, tenant_id=tenant_id, run_ids=gone)
