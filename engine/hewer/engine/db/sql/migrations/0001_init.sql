-- Hewer schema, version 1: tenants and auth, workflow definitions, runs, tasks, the queue,
-- workers, events, logs. Every tenant-owned row carries tenant_id so that every query can
-- (and must) filter on it.

CREATE TABLE tenants (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Engine-wide secrets (the JWT signing key when none is configured).
CREATE TABLE engine_secrets (
    name        text PRIMARY KEY,
    value       bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_tokens (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL DEFAULT '',
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_tokens_tenant_idx ON api_tokens (tenant_id);

-- Definitions ------------------------------------------------------------------------------

CREATE TABLE workflows (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL,
    description text NOT NULL DEFAULT '',
    is_paused   boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

-- A new version is stored only when the definition's checksum changes.
CREATE TABLE workflow_versions (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    workflow_id       uuid NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    ordinal           integer NOT NULL,
    version           text NOT NULL DEFAULT '',
    checksum          text NOT NULL,
    -- the registration request as received (proto as JSON), kept verbatim so that every
    -- setting survives even where a later feature enforces it
    definition        jsonb NOT NULL,
    sticky            text,
    default_priority  smallint NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workflow_id, ordinal)
);

CREATE TABLE steps (
    id                        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id                 uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    workflow_version_id       uuid NOT NULL REFERENCES workflow_versions (id) ON DELETE CASCADE,
    readable_id               text NOT NULL,
    action_id                 text NOT NULL,
    kind                      text NOT NULL DEFAULT 'task' CHECK (kind IN ('task', 'on_failure')),
    position                  integer NOT NULL,
    timeout_seconds           integer NOT NULL,
    schedule_timeout_seconds  integer NOT NULL,
    retries                   integer NOT NULL DEFAULT 0,
    backoff_factor            double precision,
    backoff_max_seconds       integer,
    is_durable                boolean NOT NULL DEFAULT false,
    slot_requests             jsonb NOT NULL DEFAULT '{"default": 1}',
    parents                   text[] NOT NULL DEFAULT '{}',
    UNIQUE (workflow_version_id, readable_id)
);

CREATE TABLE step_edges (
    workflow_version_id  uuid NOT NULL REFERENCES workflow_versions (id) ON DELETE CASCADE,
    parent_step_id       uuid NOT NULL REFERENCES steps (id) ON DELETE CASCADE,
    child_step_id        uuid NOT NULL REFERENCES steps (id) ON DELETE CASCADE,
    PRIMARY KEY (parent_step_id, child_step_id)
);

CREATE TABLE workflow_event_triggers (
    workflow_version_id  uuid NOT NULL REFERENCES workflow_versions (id) ON DELETE CASCADE,
    tenant_id            uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    event_key            text NOT NULL,
    PRIMARY KEY (workflow_version_id, event_key)
);
CREATE INDEX workflow_event_triggers_tenant_idx ON workflow_event_triggers (tenant_id);

-- Runs -------------------------------------------------------------------------------------

CREATE TABLE workflow_runs (
    id                     uuid PRIMARY KEY,
    tenant_id              uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    workflow_id            uuid NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    workflow_version_id    uuid NOT NULL REFERENCES workflow_versions (id) ON DELETE CASCADE,
    status                 text NOT NULL DEFAULT 'QUEUED'
                           CHECK (status IN ('QUEUED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED')),
    input                  jsonb NOT NULL DEFAULT '{}',
    additional_metadata    jsonb NOT NULL DEFAULT '{}',
    priority               smallint NOT NULL DEFAULT 1,
    parent_task_id         uuid,
    parent_run_id          uuid,
    child_index            integer,
    child_key              text,
    -- "<parent task>.<child key or index>": a repeated spawn returns the first run
    dedupe_key             text,
    desired_worker_id      uuid,
    desired_worker_labels  jsonb,
    triggering_event_id    uuid,
    triggering_event_key   text,
    created_at             timestamptz NOT NULL DEFAULT now(),
    started_at             timestamptz,
    finished_at            timestamptz,
    UNIQUE (tenant_id, dedupe_key)
);
CREATE INDEX workflow_runs_tenant_created_idx ON workflow_runs (tenant_id, created_at DESC);
CREATE INDEX workflow_runs_parent_task_idx ON workflow_runs (parent_task_id)
    WHERE parent_task_id IS NOT NULL;
CREATE INDEX workflow_runs_event_idx ON workflow_runs (triggering_event_id)
    WHERE triggering_event_id IS NOT NULL;

CREATE TABLE tasks (
    id                   uuid PRIMARY KEY,
    tenant_id            uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    workflow_run_id      uuid NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    step_id              uuid NOT NULL REFERENCES steps (id) ON DELETE CASCADE,
    readable_id          text NOT NULL,
    action_id            text NOT NULL,
    status               text NOT NULL
                         CHECK (status IN ('QUEUED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED')),
    retry_count          integer NOT NULL DEFAULT 0,
    app_retry_count      integer NOT NULL DEFAULT 0,
    priority             smallint NOT NULL DEFAULT 1,
    -- parents' outputs, condition data and (for on-failure tasks) the error map: the parts
    -- of the action payload that are not the run input
    payload_extra        jsonb NOT NULL DEFAULT '{}',
    output               text,
    error                text,
    is_skipped           boolean NOT NULL DEFAULT false,
    worker_id            uuid,
    slot_held            boolean NOT NULL DEFAULT false,
    slot_requests        jsonb NOT NULL DEFAULT '{"default": 1}',
    timeout_seconds      integer NOT NULL DEFAULT 60,
    invocation_count     integer NOT NULL DEFAULT 0,
    created_at           timestamptz NOT NULL DEFAULT now(),
    queued_at            timestamptz,
    assigned_at          timestamptz,
    started_at           timestamptz,
    finished_at          timestamptz,
    timeout_at           timestamptz,
    UNIQUE (workflow_run_id, step_id)
);
CREATE INDEX tasks_run_idx ON tasks (workflow_run_id);
CREATE INDEX tasks_worker_held_idx ON tasks (worker_id) WHERE slot_held;
CREATE INDEX tasks_timeout_idx ON tasks (timeout_at) WHERE status = 'RUNNING';
CREATE INDEX tasks_tenant_created_idx ON tasks (tenant_id, created_at DESC);

-- The hot queue: one row per task attempt waiting for a worker. Claims take rows with
-- FOR UPDATE SKIP LOCKED and delete them in the same transaction that assigns the task.
CREATE TABLE queue_items (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id            uuid NOT NULL,
    task_id              uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    retry_count          integer NOT NULL,
    action_id            text NOT NULL,
    priority             smallint NOT NULL DEFAULT 1,
    slot_requests        jsonb NOT NULL DEFAULT '{"default": 1}',
    desired_worker_id    uuid,
    available_at         timestamptz NOT NULL DEFAULT now(),
    schedule_timeout_at  timestamptz NOT NULL,
    UNIQUE (task_id)
);
CREATE INDEX queue_items_claim_idx ON queue_items (tenant_id, action_id, priority DESC, id);
CREATE INDEX queue_items_schedule_timeout_idx ON queue_items (schedule_timeout_at);

-- Monitoring history of each task attempt (the REST taskEvents list).
CREATE TABLE task_events (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        uuid NOT NULL,
    task_id          uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    workflow_run_id  uuid NOT NULL,
    retry_count      integer NOT NULL,
    event_type       text NOT NULL,
    message          text NOT NULL DEFAULT '',
    output           text,
    worker_id        uuid,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX task_events_task_idx ON task_events (task_id, id);
CREATE INDEX task_events_run_idx ON task_events (workflow_run_id, id);

-- Workers ----------------------------------------------------------------------------------

CREATE TABLE workers (
    id                         uuid PRIMARY KEY,
    tenant_id                  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name                       text NOT NULL,
    actions                    text[] NOT NULL DEFAULT '{}',
    slot_config                jsonb NOT NULL DEFAULT '{"default": 100}',
    labels                     jsonb NOT NULL DEFAULT '{}',
    runtime_info               jsonb NOT NULL DEFAULT '{}',
    -- the engine replica that holds this worker's ListenV2 stream
    engine_id                  text,
    is_active                  boolean NOT NULL DEFAULT false,
    is_paused                  boolean NOT NULL DEFAULT false,
    last_heartbeat_at          timestamptz,
    last_listener_established  timestamptz,
    created_at                 timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workers_tenant_idx ON workers (tenant_id, created_at DESC);

-- Events and logs --------------------------------------------------------------------------

CREATE TABLE events (
    id                   uuid PRIMARY KEY,
    tenant_id            uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key                  text NOT NULL,
    payload              jsonb NOT NULL DEFAULT '{}',
    additional_metadata  jsonb NOT NULL DEFAULT '{}',
    priority             smallint,
    scope                text,
    created_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_tenant_created_idx ON events (tenant_id, created_at DESC);

CREATE TABLE log_lines (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    uuid NOT NULL,
    task_id      uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    retry_count  integer NOT NULL DEFAULT 0,
    level        text NOT NULL DEFAULT 'INFO',
    message      text NOT NULL,
    metadata     jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX log_lines_task_idx ON log_lines (task_id, id);

-- Cross-replica messages too large for a NOTIFY payload (8000 bytes) are parked here and
-- the notification carries the row id.
CREATE TABLE bus_payloads (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    body        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
