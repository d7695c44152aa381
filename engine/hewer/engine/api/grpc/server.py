"""The grpc.aio server with the keepalive policy the SDKs need."""

from __future__ import annotations

import grpc
from hatchet_sdk.contracts import dispatcher_pb2_grpc, events_pb2_grpc, workflows_pb2_grpc
from hatchet_sdk.contracts.v1 import dispatcher_pb2_grpc as v1_dispatcher_grpc
from hatchet_sdk.contracts.v1 import workflows_pb2_grpc as v1_workflows_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc

from hewer.engine.api.grpc.admin import AdminService, WorkflowService
from hewer.engine.api.grpc.boundary import BoundaryInterceptor
from hewer.engine.api.grpc.dispatcher import DispatcherService
from hewer.engine.api.grpc.durable import DurableService
from hewer.engine.api.grpc.events import EventsService
from hewer.engine.api.grpc.otlp import TraceCollector
from hewer.engine.services.auth import Authenticator

# The SDKs ping every 10 s even without calls; grpcio's defaults answer that with GOAWAY
# "too_many_pings" (protocol.md §1.0).
KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
]


def build_grpc_server(
    *,
    auth: Authenticator,
    max_message_bytes: int,
    dispatcher: DispatcherService,
    admin: AdminService,
    workflows: WorkflowService,
    events: EventsService,
    durable: DurableService,
    traces: TraceCollector,
    reuse_port: bool = False,
) -> grpc.aio.Server:
    """``reuse_port``: share the port with the other processes of ``--processes N``.

    grpcio sets SO_REUSEPORT unless told not to, so a lone engine turns it off: binding a
    port that another program holding SO_REUSEPORT serves must fail, not share its traffic.
    """
    # Receive up to twice the payload limit (plus the envelope) so that the services see an
    # oversized input or task output and answer with a message naming HEWER_MAX_PAYLOAD_BYTES
    # (and fail such a task at once) instead of grpcio's bare RESOURCE_EXHAUSTED.
    receive_limit = 2 * max_message_bytes + 64 * 1024
    limit = max_message_bytes + 64 * 1024
    server = grpc.aio.server(
        interceptors=[BoundaryInterceptor(auth)],
        options=[
            *KEEPALIVE_OPTIONS,
            ("grpc.max_receive_message_length", receive_limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ],
    )
    dispatcher_pb2_grpc.add_DispatcherServicer_to_server(dispatcher, server)  # type: ignore[attr-defined]
    v1_workflows_grpc.add_AdminServiceServicer_to_server(admin, server)
    workflows_pb2_grpc.add_WorkflowServiceServicer_to_server(workflows, server)
    events_pb2_grpc.add_EventsServiceServicer_to_server(events, server)
    v1_dispatcher_grpc.add_V1DispatcherServicer_to_server(durable, server)
    # the OTLP trace service the SDKs' instrumentation exports to, on the same port and token
    otlp_grpc.add_TraceServiceServicer_to_server(traces, server)
    return server
