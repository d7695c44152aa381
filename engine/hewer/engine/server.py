"""Engine assembly: one process serving gRPC and REST against one PostgreSQL.

The engine keeps no state of its own beyond caches and the worker streams it holds, so any
number of replicas can run against the same database.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from aiohttp import web

from hewer.engine.api.dashboard.setup import add_dashboard
from hewer.engine.api.grpc.admin import AdminService, WorkflowService
from hewer.engine.api.grpc.common import GrpcContextAuth
from hewer.engine.api.grpc.dispatcher import DispatcherService
from hewer.engine.api.grpc.durable import DurableService
from hewer.engine.api.grpc.events import EventsService
from hewer.engine.api.grpc.otlp import TraceCollector
from hewer.engine.api.grpc.server import build_grpc_server
from hewer.engine.api.grpc.streams import RunStreams
from hewer.engine.api.rest.app import build_app
from hewer.engine.config import Settings
from hewer.engine.db.repository import Repository, create_pool
from hewer.engine.errors import EngineStartError
from hewer.engine.ready import ReadyInfo, authenticator, ready_info
from hewer.engine.services.admission import Admission
from hewer.engine.services.autoscaling import Autoscaling
from hewer.engine.services.batch_reports import BatchReports
from hewer.engine.services.batches import BatchFlusher
from hewer.engine.services.bus import Bus
from hewer.engine.services.control import RunControl
from hewer.engine.services.dashboard import Dashboard, SpansForRun
from hewer.engine.services.definitions import Definitions
from hewer.engine.services.durable import DurableLog
from hewer.engine.services.durable_signals import DurableSignals
from hewer.engine.services.enqueue import Enqueuer
from hewer.engine.services.events import Events
from hewer.engine.services.heartbeats import HeartbeatBuffer
from hewer.engine.services.lifecycle import Lifecycle
from hewer.engine.services.matches import Matches
from hewer.engine.services.metrics import METRICS
from hewer.engine.services.outage import quiet_database_pool_logs
from hewer.engine.services.reads import Reads
from hewer.engine.services.retention import Retention, ensure_partitions
from hewer.engine.services.scheduler import Scheduler
from hewer.engine.services.scheduling import Scheduling
from hewer.engine.services.secrets import SecretBox
from hewer.engine.services.statistics import TableStatistics
from hewer.engine.services.subscriptions import EventWatchers, ResultWatchers
from hewer.engine.services.tenant_objects import TenantObjects
from hewer.engine.services.timers import Timers
from hewer.engine.services.traces import Traces
from hewer.engine.services.triggers import Triggers
from hewer.engine.services.worker_registry import WorkerRegistry
from hewer.engine.services.workers import ActionMessage, WorkerHub

log = logging.getLogger(__name__)


def settle_heap() -> None:
    """Keep the garbage collector off the startup heap and off the hot path.

    After startup the heap holds about 200,000 long-lived objects (modules, protobuf
    descriptors, SQL texts) that every full collection walked again, about 100 ms each and
    six or seven times in a bench run under load. Frozen, they are never scanned; a larger
    first-generation threshold makes the young collections three times rarer. Per the
    bench's gc probe (``bench.py --gc-stats``; tests/bench/README.md, session 11) no full
    collection runs under load any more and collection CPU per run fell from 1.2-1.3 s to
    0.4-0.5 s; RSS did not grow.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


async def create_token(
    *, settings: Settings, dsn: str, tenant_name: str, name: str, expires_in: timedelta
) -> str:
    """Mint an API token for a tenant (created if missing)."""
    pool = await create_pool(dsn, size=2)
    repo = Repository(pool, observer=METRICS)
    try:
        tenant_id = await repo.ensure_tenant(tenant_name)
        auth = await authenticator(settings=settings, repo=repo)
        return await auth.issue(tenant_id=tenant_id, name=name, expires_in=expires_in)
    finally:
        await repo.close()


async def run_engine(
    *,
    settings: Settings,
    dsn: str,
    stop: asyncio.Event,
    on_ready: Callable[[ReadyInfo], None] | None = None,
    spans_for_run: SpansForRun | None = None,
    reuse_port: bool = False,
    on_serving: Callable[[str], None] | None = None,
) -> None:
    """Serve until ``stop`` is set, then shut down cleanly.

    ``spans_for_run``: where the dashboard's run page reads a run's trace spans (see
    ``services/dashboard.py``); without it run pages have no Trace section.
    ``reuse_port``: bind both ports with SO_REUSEPORT, as one of ``--processes N``.
    ``on_serving``: told this engine's id once both ports serve (no token is issued for it,
    unlike ``on_ready``).
    """
    engine_id = f"engine-{uuid.uuid4()}"
    quiet_database_pool_logs()
    repo = Repository(await create_pool(dsn, size=settings.db_pool_size), observer=METRICS)
    await ensure_partitions(repo)  # before the first run is written
    bus = Bus(repo=repo, dsn=dsn)
    hub = WorkerHub()
    definitions = Definitions(repo)
    enqueuer = Enqueuer(repo=repo, bus=bus, definitions=definitions)
    lifecycle = Lifecycle(repo=repo, bus=bus, definitions=definitions, enqueuer=enqueuer)
    triggers = Triggers(repo=repo, bus=bus, definitions=definitions, enqueuer=enqueuer)
    scheduling = Scheduling(repo=repo, bus=bus, triggers=triggers, lifecycle=lifecycle)
    retention = Retention(
        repo=repo,
        default_hours=settings.retention_hours,
        interval_seconds=settings.retention_interval_seconds,
    )
    statistics = TableStatistics(repo=repo)
    events = Events(repo=repo, triggers=triggers)
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
    scheduler = Scheduler(repo=repo, hub=hub, engine_id=engine_id)
    lifecycle.scheduler = scheduler
    timers = Timers(
        repo=repo, lifecycle=lifecycle, heartbeat_timeout=settings.heartbeat_timeout_seconds
    )
    matches = Matches(repo=repo, bus=bus, lifecycle=lifecycle, enqueuer=enqueuer)
    timers.matches = matches
    events.matches = matches
    lifecycle.progression.matches = matches
    triggers.matches = matches
    durable_log = DurableLog(repo=repo, bus=bus, enqueuer=enqueuer, triggers=triggers)
    durable_log.matches = matches
    matches.durable = durable_log
    control.durable = durable_log
    matches.wake_timers = timers.wake
    results = ResultWatchers(repo)
    run_events = EventWatchers()
    auth = await authenticator(settings=settings, repo=repo)
    tenant_id = await repo.ensure_tenant(settings.default_tenant)

    batches = BatchFlusher(
        repo=repo,
        hub=hub,
        lifecycle=lifecycle,
        engine_id=engine_id,
        assign_lock=scheduler.assign_lock,
    )

    async def requeue(messages: list[ActionMessage]) -> None:
        for m in messages:
            for task_id, retry_count in m.attempts():
                await lifecycle.requeue_lost(
                    tenant_id=m.tenant_id,
                    task_id=task_id,
                    retry_count=retry_count,
                    reason="worker stream closed before the task was sent",
                )

    scheduler.on_undeliverable = requeue
    bus.subscribe("admit", admission.on_bus)
    bus.subscribe("resync", admission.on_bus)
    batches.on_undeliverable = requeue
    for kind in ("queue", "slots", "resync"):
        bus.subscribe(kind, batches.on_bus)
    bus.subscribe("queue", scheduler.on_bus)
    bus.subscribe("slots", scheduler.on_bus)
    bus.subscribe("resync", scheduler.on_bus)
    bus.subscribe("worker", hub.on_bus)
    bus.subscribe("run", results.on_bus)
    bus.subscribe("run", run_events.on_run_finished)
    bus.subscribe("event", run_events.on_event)
    bus.subscribe("children", matches.on_children_bus)
    autoscaling = Autoscaling(repo=repo)
    bus.subscribe("queue", autoscaling.on_bus)
    bus.subscribe("resync", autoscaling.on_bus)

    reads = Reads(repo)
    traces = Traces(repo=repo)
    tenant_objects = TenantObjects(repo)
    heartbeats = HeartbeatBuffer(repo=repo)
    worker_registry = WorkerRegistry(repo, beats=heartbeats)
    grpc_auth = GrpcContextAuth(auth)
    streams = RunStreams(reads=reads, results=results, events=run_events)
    dispatcher = DispatcherService(
        auth=grpc_auth,
        workers=worker_registry,
        hub=hub,
        scheduler=scheduler,
        lifecycle=lifecycle,
        streams=streams,
        engine_id=engine_id,
        max_payload_bytes=settings.max_payload_bytes,
        batch_reports=BatchReports(repo=repo, lifecycle=lifecycle),
    )
    dispatcher.control = control
    grpc_server = build_grpc_server(
        auth=auth,
        max_message_bytes=settings.max_payload_bytes,
        dispatcher=dispatcher,
        admin=AdminService(
            auth=grpc_auth,
            reads=reads,
            definitions=definitions,
            triggers=triggers,
            control=control,
            max_payload_bytes=settings.max_payload_bytes,
        ),
        workflows=WorkflowService(
            auth=grpc_auth,
            triggers=triggers,
            max_payload_bytes=settings.max_payload_bytes,
            scheduling=scheduling,
            objects=tenant_objects,
        ),
        events=EventsService(
            auth=grpc_auth,
            workers=worker_registry,
            events=events,
            bus=bus,
            max_payload_bytes=settings.max_payload_bytes,
        ),
        durable=DurableService(
            auth=grpc_auth,
            durable=durable_log,
            signals=DurableSignals(repo=repo, durable=durable_log),
            bus=bus,
            max_payload_bytes=settings.max_payload_bytes,
        ),
        traces=TraceCollector(
            auth=grpc_auth, traces=traces, max_span_bytes=settings.max_payload_bytes
        ),
        reuse_port=reuse_port,
    )
    grpc_address = f"{settings.bind_host}:{settings.grpc_port}"
    try:
        bound = grpc_server.add_insecure_port(grpc_address)
    except RuntimeError:
        bound = 0
    if not bound:
        await repo.close()
        raise EngineStartError(f"cannot listen for gRPC on {grpc_address}: port in use?")

    async def trace_of_run(*, tenant_id: str, run_id: str) -> list[dict[str, Any]]:
        """The run's spans as the dashboard's waterfall reads them (seconds since epoch)."""
        spans = await traces.spans_for_run(tenant_id=tenant_id, run_id=run_id)
        return [
            {
                "name": s.name,
                "start": s.start_ns / 1e9,
                "end": s.end_ns / 1e9,
                "status": s.status.value,
                "attributes": dict(s.attributes),
            }
            for s in spans
        ]

    dashboard = Dashboard(
        repo=repo, autoscaling=autoscaling, spans_for_run=spans_for_run or trace_of_run
    )
    secret_box = await SecretBox.create(repo=repo, configured_key=settings.encryption_key)
    app = build_app(
        reads=reads,
        objects=tenant_objects,
        control=control,
        auth=auth,
        definitions=definitions,
        events_service=events,
        secret_box=secret_box,
        scheduling_service=scheduling,
        max_payload_bytes=settings.max_payload_bytes,
        autoscaling=autoscaling,
        traces=traces,
        dashboard=dashboard,
    )
    add_dashboard(
        app,
        dashboard=dashboard,
        auth=auth,
        auth_mode=settings.dashboard_auth,
        control=control,
        scheduling=scheduling,
        run_events=run_events,
        heartbeat_timeout=settings.heartbeat_timeout_seconds,
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(
        runner, settings.bind_host, settings.http_port, reuse_port=reuse_port or None
    )

    await bus.start()
    scheduler.start()
    admission.start()
    batches.start()
    timers.start()
    heartbeats.start()
    scheduling.start()
    retention.start()
    statistics.start()
    results.start()
    await grpc_server.start()
    try:
        await site.start()
    except OSError as exc:
        stop.set()
        startup_error: EngineStartError | None = EngineStartError(
            f"cannot listen for HTTP on {settings.bind_host}:{settings.http_port}: {exc.strerror}"
        )
    else:
        startup_error = None
    try:
        if startup_error is not None:
            raise startup_error
        log.info(
            "engine %s serving gRPC on %s:%s and REST on %s:%s",
            engine_id,
            settings.bind_host,
            settings.grpc_port,
            settings.bind_host,
            settings.http_port,
        )
        settle_heap()
        if on_ready is not None:
            token = await auth.issue(tenant_id=tenant_id, name="dev")
            on_ready(ready_info(settings=settings, tenant_id=tenant_id, token=token))
        if on_serving is not None:
            on_serving(engine_id)
        await stop.wait()
    finally:
        log.info("shutting down")
        await grpc_server.stop(grace=2.0)
        await runner.cleanup()
        await results.stop()
        await retention.stop()
        await statistics.stop()
        await scheduling.stop()
        await timers.stop()
        await heartbeats.stop()
        await admission.stop()
        await batches.stop()
        await scheduler.stop()
        await bus.close()
        await repo.close()
