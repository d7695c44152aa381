"""Cross-replica signals over PostgreSQL LISTEN/NOTIFY.

Every engine replica listens on one channel. A message is ``{"t": kind, ...}``; kinds:

* ``queue``   a tenant's queue gained items (wake the scheduler)
* ``admit``   a tenant's concurrency slots changed (wake admission)
* ``slots``   a worker's slots were freed (wake the scheduler)
* ``worker``  something to send to a worker's stream (e.g. a cancel), for whoever holds it
* ``run``     a workflow run finished (answer result subscribers)
* ``event``   a run event for live subscribers (task started/finished, stream chunks)

Notifications sent inside a transaction are delivered at commit, so a subscriber never
sees a signal for a change it cannot read yet. Bodies over the NOTIFY limit are parked in
``bus_payloads`` and the notification carries the row id.

The replica that made a change hands its own handlers the idempotent part at once
(``echo_locally``); a message published with ``echoed=True`` says so, and when its NOTIFY
comes back to that replica only the rest is delivered, so a scheduler is not woken twice
for one trigger.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from hewer.engine.db.listener import Listener
from hewer.engine.db.repository import Conn, Repository
from hewer.engine.services.outage import is_database_unavailable, log_failure, outage_log

CHANNEL = "hewer_bus"
_MAX_INLINE = 7000  # NOTIFY payloads must stay under 8000 bytes
_IDEMPOTENT_KINDS = frozenset({"queue", "slots", "run", "admit"})
_PRUNE_EVERY_TICKS = 60  # seconds between deletes of parked bodies

Handler = Callable[[dict[str, Any]], Awaitable[None] | None]
log = logging.getLogger(__name__)


class Bus:
    def __init__(self, *, repo: Repository, dsn: str) -> None:
        self._repo = repo
        self._dsn = dsn
        self._handlers: dict[str, list[Handler]] = defaultdict(list)
        self._listener: Listener | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._consumer: asyncio.Task[None] | None = None
        # one consumer keeps messages in NOTIFY order (stream chunks depend on it)
        self._inbox: asyncio.Queue[str] = asyncio.Queue()
        self._closing = False
        self.connected = asyncio.Event()
        # in the messages whose idempotent part this replica echoes itself
        self.id = uuid.uuid4().hex

    def subscribe(self, kind: str, handler: Handler) -> None:
        self._handlers[kind].append(handler)

    async def start(self) -> None:
        self._consumer = asyncio.create_task(self._consume(), name="bus-consumer")
        self._supervisor = asyncio.create_task(self._keep_listening(), name="bus-listener")
        await asyncio.wait_for(self.connected.wait(), timeout=30)

    async def close(self) -> None:
        self._closing = True
        for task in (self._supervisor, self._consumer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._listener is not None:
            await self._listener.close()

    def echo_locally(self, message: dict[str, Any]) -> None:
        """Hand this replica's own handlers the idempotent part of a committed message now.

        The NOTIFY round trip through PostgreSQL costs a millisecond or more; wake-ups and
        run-finished signals are safe to see twice, so the replica that made the change
        acts on them at once and simply finds nothing left to do when the NOTIFY arrives.
        Call it only after the transaction that published ``message`` committed.
        """
        items = message.get("m", []) if message.get("t") == "multi" else [message]
        local = [m for m in items if m.get("t") in _IDEMPOTENT_KINDS]
        if local:
            self._inbox.put_nowait(json.dumps({"t": "multi", "m": local}))

    def echoed(self, message: dict[str, Any]) -> dict[str, Any]:
        """``message`` marked as echoed locally by this replica (see the module doc)."""
        return {**message, "e": self.id}

    async def publish(
        self, conn: Conn | None, message: dict[str, Any], *, echoed: bool = False
    ) -> None:
        """Send a message; inside a transaction it is delivered at commit (and sent with the
        COMMIT, db/transactions.py). ``echoed``: the caller echoes it locally after the
        commit (``echo_locally``)."""
        body = json.dumps(self.echoed(message) if echoed else message, separators=(",", ":"))
        if len(body.encode()) > _MAX_INLINE:
            ref = await self._repo.park_bus_payload(conn, body)
            body = json.dumps({"ref": ref})
        if conn is None:
            async with self._repo.connection() as own:
                await self._repo.notify(own, channel=CHANNEL, payload=body)
        else:
            await self._repo.notify(conn, channel=CHANNEL, payload=body)

    async def _keep_listening(self) -> None:
        delay = 0.2
        while not self._closing:
            try:
                listener = await Listener.open(
                    self._dsn, channel=CHANNEL, on_message=self._on_notify
                )
                self._listener = listener
                self.connected.set()
                outage_log("bus").succeeded()
                delay = 0.2
                # a lost listener connection means missed signals: tell everyone to resync
                await self._dispatch({"t": "resync"})
                ticks = 0
                while listener.is_open:
                    await asyncio.sleep(1.0)
                    ticks += 1
                    with contextlib.suppress(Exception):
                        await listener.ping()
                        if ticks % _PRUNE_EVERY_TICKS == 0:
                            await self._repo.prune_bus_payloads()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_database_unavailable(exc):
                    outage_log("bus").failed(exc)
                else:
                    log.warning("bus listener lost; reconnecting", exc_info=True)
            self.connected.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _on_notify(self, payload: str) -> None:
        self._inbox.put_nowait(payload)

    async def _consume(self) -> None:
        while True:
            payload = await self._inbox.get()
            await self._deliver(payload)

    async def _deliver(self, payload: str) -> None:
        try:
            message = json.loads(payload)
            if "ref" in message:
                body = await self._repo.fetch_bus_payload(int(message["ref"]))
                if body is None:
                    return
                message = json.loads(body)
            if message.get("e") == self.id:
                message = _not_idempotent(message)
            await self._dispatch(message)
        except Exception as exc:
            log_failure("bus delivery", exc, log, f"bus message {payload[:200]}")

    async def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("t") == "multi":
            for item in message.get("m", []):
                await self._dispatch(item)
            return
        for handler in self._handlers.get(message.get("t", ""), []):
            result = handler(message)
            if result is not None:
                await result


def _not_idempotent(message: dict[str, Any]) -> dict[str, Any]:
    """What of a message this replica echoed itself it has not delivered yet."""
    items = message.get("m", []) if message.get("t") == "multi" else [message]
    return {"t": "multi", "m": [m for m in items if m.get("t") not in _IDEMPOTENT_KINDS]}
