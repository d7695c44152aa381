-- Durable execution (issue 10): the durable event log, durable waits on the match table,
-- and the EVICTED task state.
--
-- A durable task's log is a list of entries (nodes) per branch: a wait (sleeps, user events),
-- a memo, or a child run. Node ids restart at 1 for every invocation (each assignment of the
-- task), so a replay walks the log from the start: an entry that exists is returned as
-- recorded, a new one is appended. ``durable_logs`` holds the per-task counters; a branch
-- (``BranchDurableTask``) starts at a node and reads the nodes before it from its parent.
--
-- A durable wait is a match like a DAG condition's (action CREATE), one per log entry, so
-- several can be pending for one task (children spawned in bulk). A CHILD condition is
-- satisfied by the trigger below, in the transaction that finishes the child run.

ALTER TABLE tasks DROP CONSTRAINT tasks_status_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_status_check
    CHECK (status IN ('QUEUED', 'WAITING', 'RUNNING', 'EVICTED', 'COMPLETED', 'FAILED',
                      'CANCELLED'));

CREATE TABLE durable_logs (
    task_id           uuid PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
    tenant_id         uuid NOT NULL,
    -- the invocation the node counter belongs to; a newer one restarts it
    invocation_count  integer NOT NULL,
    last_node_id      integer NOT NULL DEFAULT 0,
    -- the branch new entries are written to (the latest one)
    branch_id         integer NOT NULL DEFAULT 1
);

CREATE TABLE durable_branches (
    task_id           uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    branch_id         integer NOT NULL,
    parent_branch_id  integer NOT NULL,
    -- nodes before this one are read from the parent branch
    first_node_id     integer NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, branch_id)
);

CREATE TABLE durable_entries (
    task_id          uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    tenant_id        uuid NOT NULL,
    branch_id        integer NOT NULL,
    node_id          integer NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('WAIT_FOR', 'MEMO', 'RUN')),
    -- what the node asked for; a replay asking for something else at this node is
    -- non-determinism
    idempotency_key  bytea NOT NULL,
    label            text,
    child_run_id     uuid,
    satisfied_at     timestamptz,
    -- 1, 2, ... in the order the task's nodes were satisfied: a replay gets the results of
    -- nodes it waits on concurrently in this order, so racing futures resolve as they did
    satisfied_order  integer,
    -- the result handed back to the task (JSON bytes), or the error of a failed child
    result           bytea,
    is_failure       boolean NOT NULL DEFAULT false,
    error_message    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, branch_id, node_id)
);

CREATE INDEX durable_entries_child_idx ON durable_entries (child_run_id)
    WHERE child_run_id IS NOT NULL;

-- a task may now wait on several matches: one DAG-condition match, or one per log entry
ALTER TABLE task_matches DROP CONSTRAINT task_matches_task_id_key;
ALTER TABLE task_matches ADD COLUMN durable_branch_id integer;
ALTER TABLE task_matches ADD COLUMN durable_node_id integer;
CREATE UNIQUE INDEX task_matches_dag_idx ON task_matches (task_id)
    WHERE durable_node_id IS NULL;
CREATE UNIQUE INDEX task_matches_durable_idx
    ON task_matches (task_id, durable_branch_id, durable_node_id)
    WHERE durable_node_id IS NOT NULL;

ALTER TABLE task_match_conditions DROP CONSTRAINT task_match_conditions_action_check;
ALTER TABLE task_match_conditions ADD CONSTRAINT task_match_conditions_action_check
    CHECK (action IN ('QUEUE', 'SKIP', 'CANCEL', 'CREATE'));
ALTER TABLE task_match_conditions DROP CONSTRAINT task_match_conditions_kind_check;
ALTER TABLE task_match_conditions ADD CONSTRAINT task_match_conditions_kind_check
    CHECK (kind IN ('SLEEP', 'USER_EVENT', 'CHILD'));
ALTER TABLE task_match_conditions ADD COLUMN child_run_id uuid;
-- a durable sleep's duration as the task sent it ("5s"), handed back when it fires
ALTER TABLE task_match_conditions ADD COLUMN sleep_for text;
CREATE INDEX task_match_conditions_child_idx ON task_match_conditions (child_run_id)
    WHERE kind = 'CHILD' AND satisfied_at IS NULL;
-- satisfied CHILD conditions whose match has not fired yet (deleted when it fires)
CREATE INDEX task_match_conditions_child_ready_idx ON task_match_conditions (match_id)
    WHERE kind = 'CHILD' AND satisfied_at IS NOT NULL;

-- A child run that ends satisfies the CHILD conditions waiting for it, in the same
-- transaction, and wakes the engines (services/matches.py fires the completed matches;
-- the timer loop sweeps them too, so a lost notification only delays the wake-up).
CREATE FUNCTION hewer_child_run_finished() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE task_match_conditions
    SET satisfied_at = now(), data = jsonb_build_object('run', NEW.id)
    WHERE kind = 'CHILD' AND child_run_id = NEW.id AND satisfied_at IS NULL;
    IF FOUND THEN
        PERFORM pg_notify('hewer_bus', '{"t": "children"}');
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER workflow_runs_child_finished
    AFTER UPDATE OF status ON workflow_runs
    FOR EACH ROW
    WHEN (NEW.parent_task_id IS NOT NULL
          AND NEW.status IN ('COMPLETED', 'FAILED', 'CANCELLED')
          AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION hewer_child_run_finished();
