-- OpenTelemetry spans the SDKs export to the engine's OTLP TraceService (issue 12).
--
-- Only spans sent from outside are stored: the engine's own spans of a run are derived from
-- the run, task and task-event rows when a trace is read (core/engine_spans.py). A trace is
-- read by its id (the primary key); the run and task columns hold the SDK's hatchet.*
-- correlation attributes, to find the trace of a run whose rows are gone. Retention deletes
-- spans by the time they were received, with the tenant's run retention.

CREATE TABLE otel_spans (
    tenant_id            uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    trace_id             bytea NOT NULL CHECK (length(trace_id) = 16),
    span_id              bytea NOT NULL CHECK (length(span_id) = 8),
    parent_span_id       bytea CHECK (length(parent_span_id) = 8),
    name                 text NOT NULL,
    kind                 text NOT NULL CHECK (kind IN ('UNSPECIFIED', 'INTERNAL', 'SERVER',
                                                       'CLIENT', 'PRODUCER', 'CONSUMER')),
    service_name         text NOT NULL DEFAULT '',
    status_code          text NOT NULL CHECK (status_code IN ('UNSET', 'OK', 'ERROR')),
    status_message       text NOT NULL DEFAULT '',
    -- nanoseconds since the epoch: timestamptz keeps only microseconds
    start_ns             bigint NOT NULL CHECK (start_ns > 0),
    duration_ns          bigint NOT NULL CHECK (duration_ns >= 0),
    resource_attributes  jsonb NOT NULL DEFAULT '{}',
    attributes           jsonb NOT NULL DEFAULT '{}',
    events               jsonb NOT NULL DEFAULT '[]',
    links                jsonb NOT NULL DEFAULT '[]',
    scope_name           text NOT NULL DEFAULT '',
    scope_version        text NOT NULL DEFAULT '',
    task_run_id          uuid,
    workflow_run_id      uuid,
    retry_count          integer NOT NULL DEFAULT 0,
    received_at          timestamptz NOT NULL DEFAULT now(),
    -- an exporter may send a span twice (a retried export, two processors): kept once
    PRIMARY KEY (tenant_id, trace_id, span_id)
);

CREATE INDEX otel_spans_run_idx ON otel_spans (tenant_id, workflow_run_id)
    WHERE workflow_run_id IS NOT NULL;
CREATE INDEX otel_spans_task_idx ON otel_spans (tenant_id, task_run_id)
    WHERE task_run_id IS NOT NULL;
CREATE INDEX otel_spans_received_idx ON otel_spans (tenant_id, received_at);
