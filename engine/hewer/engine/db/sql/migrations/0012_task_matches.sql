-- DAG conditions: the WAITING task state and the match table (issue 10).
--
-- A task whose parents are done but whose sleep or user-event conditions are not is created
-- WAITING (no queue item, no slot) with one match: its pending conditions, grouped by
-- action (QUEUE = wait_for, SKIP, CANCEL) into or-groups. The timer loop satisfies sleeps,
-- event ingestion satisfies user events; the transaction that marks a condition satisfied
-- (storing what satisfied it in ``data``) also fires the match when an action is complete,
-- deleting it. Matches are locked FOR UPDATE before their conditions change, so two replicas
-- never fire one twice. Durable waits are meant to use the same two tables later.

ALTER TABLE tasks DROP CONSTRAINT tasks_status_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_status_check
    CHECK (status IN ('QUEUED', 'WAITING', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED'));

CREATE TABLE task_matches (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    task_id     uuid NOT NULL UNIQUE REFERENCES tasks (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE task_match_conditions (
    id                 bigserial PRIMARY KEY,
    match_id           uuid NOT NULL REFERENCES task_matches (id) ON DELETE CASCADE,
    tenant_id          uuid NOT NULL,
    action             text NOT NULL CHECK (action IN ('QUEUE', 'SKIP', 'CANCEL')),
    or_group_id        text NOT NULL,
    kind               text NOT NULL CHECK (kind IN ('SLEEP', 'USER_EVENT')),
    readable_data_key  text NOT NULL DEFAULT '',
    expression         text NOT NULL DEFAULT '',
    event_key          text,
    event_scope        text,
    sleep_until        timestamptz,
    satisfied_at       timestamptz,
    data               jsonb
);

CREATE INDEX task_match_conditions_match_idx ON task_match_conditions (match_id);
CREATE INDEX task_match_conditions_event_idx ON task_match_conditions (tenant_id, event_key)
    WHERE kind = 'USER_EVENT' AND satisfied_at IS NULL;
CREATE INDEX task_match_conditions_sleep_idx ON task_match_conditions (sleep_until)
    WHERE kind = 'SLEEP' AND satisfied_at IS NULL;
