-- Concurrency admission: a task (or, for a DAG's workflow-level strategies, its run) holds
-- one slot per strategy it is subject to. Only a holder whose every slot is admitted gets a
-- queue item, so the scheduler never sees work a concurrency key holds back. Admission
-- runs under a per-tenant advisory lock in one transaction, so replicas never admit past
-- max_runs; the slots go when their holder finishes (the triggers below, on every path).
CREATE TABLE concurrency_slots (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- arrival order within a key
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- the task (task-level and single-task workflows) or the run (a DAG's workflow level)
    holder_id uuid NOT NULL,
    holder_kind text NOT NULL CHECK (holder_kind IN ('task', 'run')),
    run_id uuid NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    retry_count integer NOT NULL DEFAULT 0,
    position integer NOT NULL,  -- place in the holder's chain; admitted in this order
    strategy_id text NOT NULL,  -- "<workflow id>/<task name or *>/<index>"
    strategy text NOT NULL
        CHECK (strategy IN ('GROUP_ROUND_ROBIN', 'CANCEL_IN_PROGRESS', 'CANCEL_NEWEST')),
    max_runs integer NOT NULL CHECK (max_runs >= 1),
    expression text NOT NULL,  -- the CEL the key came from (task-stats shows it)
    key text NOT NULL,
    priority smallint NOT NULL,
    active boolean NOT NULL,  -- every earlier slot of the chain is admitted
    admitted boolean NOT NULL DEFAULT false,
    available_at timestamptz NOT NULL DEFAULT now(),  -- a retry's back-off
    schedule_timeout_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (holder_id, position)
);

CREATE INDEX concurrency_slots_group_idx
    ON concurrency_slots (tenant_id, strategy_id, key, admitted);
CREATE INDEX concurrency_slots_waiting_idx
    ON concurrency_slots (tenant_id, available_at) WHERE active AND NOT admitted;
CREATE INDEX concurrency_slots_timeout_idx
    ON concurrency_slots (schedule_timeout_at) WHERE NOT admitted;
CREATE INDEX concurrency_slots_run_idx ON concurrency_slots (run_id);

-- Set when a holder's slots are written: the release triggers fire only for these rows, so
-- tasks and runs without concurrency pay nothing on the hot path.
ALTER TABLE tasks ADD COLUMN gated boolean NOT NULL DEFAULT false;
ALTER TABLE workflow_runs ADD COLUMN gated boolean NOT NULL DEFAULT false;

-- A holder's slots go when it reaches a final state (a task also when it is retried: the
-- retry queues again, at the engine's requeue priority), and admission is woken.
CREATE FUNCTION release_concurrency_slots() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM concurrency_slots WHERE holder_id = NEW.id;
    IF FOUND THEN
        PERFORM pg_notify(
            'hewer_bus',
            json_build_object('t', 'admit', 'tenant', NEW.tenant_id)::text
        );
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_release_concurrency
    AFTER UPDATE OF status, retry_count ON tasks
    FOR EACH ROW
    WHEN (NEW.gated AND (NEW.status IN ('COMPLETED', 'FAILED', 'CANCELLED')
                         OR NEW.retry_count <> OLD.retry_count))
    EXECUTE FUNCTION release_concurrency_slots();

CREATE TRIGGER workflow_runs_release_concurrency
    AFTER UPDATE OF status ON workflow_runs
    FOR EACH ROW
    WHEN (NEW.gated AND NEW.status IN ('COMPLETED', 'FAILED', 'CANCELLED'))
    EXECUTE FUNCTION release_concurrency_slots();

-- Rate limits a queued item takes when it is assigned (resolved from the run's input when
-- it was queued; NULL for most items), and whether it was already deferred by one (so the
-- REQUEUED_RATE_LIMIT event is written once, not every window).
ALTER TABLE queue_items ADD COLUMN rate_limits jsonb;
ALTER TABLE queue_items ADD COLUMN rate_limited boolean NOT NULL DEFAULT false;
