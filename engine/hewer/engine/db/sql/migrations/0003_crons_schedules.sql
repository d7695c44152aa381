-- Crons, scheduled runs, rate limits, workflow pause, data retention.

-- Cron triggers. Code-defined ones (origin 'code', from on_crons at registration) are
-- replaced on each registration; API ones are kept. next_fire_at is the next tick to fire:
-- the replica that locks the row (FOR UPDATE SKIP LOCKED) fires it and moves it on in the
-- same transaction that creates the run, so each tick fires once across replicas.
CREATE TABLE crons (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id            uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    workflow_id          uuid NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    name                 text NOT NULL,
    expression           text NOT NULL,
    input                jsonb NOT NULL DEFAULT '{}',
    additional_metadata  jsonb NOT NULL DEFAULT '{}',
    priority             smallint CHECK (priority BETWEEN 1 AND 3),
    origin               text NOT NULL CHECK (origin IN ('code', 'api')),
    enabled              boolean NOT NULL DEFAULT true,
    next_fire_at         timestamptz NOT NULL,
    last_fired_at        timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workflow_id, name, expression)
);
CREATE INDEX crons_due_idx ON crons (next_fire_at) WHERE enabled;
CREATE INDEX crons_tenant_idx ON crons (tenant_id, created_at DESC);

-- One-time scheduled runs. status: SCHEDULED until fired, then QUEUED (a run was created,
-- workflow_run_id says which) or CANCELLED (dropped: missed, or the workflow was paused with
-- the DROP behaviour).
CREATE TABLE scheduled_runs (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id            uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    workflow_id          uuid NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    trigger_at           timestamptz NOT NULL,
    input                jsonb NOT NULL DEFAULT '{}',
    additional_metadata  jsonb NOT NULL DEFAULT '{}',
    priority             smallint CHECK (priority BETWEEN 1 AND 3),
    origin               text NOT NULL DEFAULT 'api' CHECK (origin IN ('code', 'api')),
    status               text NOT NULL DEFAULT 'SCHEDULED'
                         CHECK (status IN ('SCHEDULED', 'QUEUED', 'CANCELLED')),
    workflow_run_id      uuid,
    parent_task_id       uuid,
    fired_at             timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX scheduled_runs_due_idx ON scheduled_runs (trigger_at) WHERE status = 'SCHEDULED';
CREATE INDEX scheduled_runs_tenant_idx ON scheduled_runs (tenant_id, trigger_at DESC);

-- Rate limits (stored and listed; enforcement on tasks comes later).
CREATE TABLE rate_limits (
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key          text NOT NULL,
    limit_value  integer NOT NULL CHECK (limit_value >= 0),
    duration     text NOT NULL
                 CHECK (duration IN ('SECOND', 'MINUTE', 'HOUR', 'DAY', 'WEEK', 'MONTH', 'YEAR')),
    value        integer NOT NULL DEFAULT 0,
    last_refill  timestamptz NOT NULL DEFAULT now(),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);

-- Workflow pause: while paused, the workflow's queue items are set aside (paused = true), so
-- the claim query, which reads a partial index of unpaused items only, never sees them.
-- A set-aside item is cancelled once pause_expires_at passes (pausedWorkflowQueueTTL).
ALTER TABLE workflows
    ADD COLUMN paused_queue_ttl_seconds double precision NOT NULL DEFAULT 0,
    ADD COLUMN paused_cron_behavior text NOT NULL DEFAULT 'QUEUE'
        CHECK (paused_cron_behavior IN ('QUEUE', 'DROP')),
    ADD COLUMN paused_scheduled_behavior text NOT NULL DEFAULT 'QUEUE'
        CHECK (paused_scheduled_behavior IN ('QUEUE', 'DROP'));

ALTER TABLE queue_items
    ADD COLUMN paused boolean NOT NULL DEFAULT false,
    ADD COLUMN pause_expires_at timestamptz;
DROP INDEX queue_items_claim_idx;
CREATE INDEX queue_items_claim_idx ON queue_items (tenant_id, action_id, priority DESC, id)
    WHERE NOT paused;
CREATE INDEX queue_items_paused_idx ON queue_items (pause_expires_at) WHERE paused;

-- Data retention: final-state runs and events older than this are deleted (NULL: the
-- engine's default, HEWER_RETENTION_HOURS).
ALTER TABLE tenants ADD COLUMN retention_hours integer CHECK (retention_hours > 0);
CREATE INDEX workflow_runs_finished_idx ON workflow_runs (finished_at)
    WHERE finished_at IS NOT NULL;
CREATE INDEX events_created_idx ON events (created_at);
