-- WorkerPool reports (issue 12): the operator tells the engine what each pool it scales
-- wants and has, so the dashboard can show replicas and scale decisions over time.
--
-- worker_pool_reports keeps the latest report of each pool; worker_pool_history keeps a
-- point whenever the replicas change, a decision is made, or a minute has passed since the
-- last point (so a steady pool costs 60 rows an hour, not one per poll). History older than
-- a week is dropped by the statement that appends to it.

CREATE TABLE worker_pool_reports (
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    pool              text NOT NULL,
    workflows         text[] NOT NULL DEFAULT '{}',
    autoscaling       boolean NOT NULL,
    min_replicas      integer,
    max_replicas      integer,
    desired_replicas  integer NOT NULL CHECK (desired_replicas >= 0),
    current_replicas  integer NOT NULL CHECK (current_replicas >= 0),
    ready_replicas    integer,
    queued            integer,
    running           integer,
    busy_workers      integer,
    reason            text NOT NULL DEFAULT '',
    reported_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, pool)
);

CREATE TABLE worker_pool_history (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    pool              text NOT NULL,
    at                timestamptz NOT NULL DEFAULT now(),
    desired_replicas  integer NOT NULL,
    current_replicas  integer NOT NULL,
    queued            integer,
    running           integer,
    -- set on the points where the operator decided to scale (or held on purpose)
    decision          text CHECK (decision IN ('up', 'down', 'hold')),
    reason            text
);

CREATE INDEX worker_pool_history_pool_idx ON worker_pool_history (tenant_id, pool, at DESC);
