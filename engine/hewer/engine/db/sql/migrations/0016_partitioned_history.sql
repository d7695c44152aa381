-- Runs, tasks and task events partitioned by time (issue 11): one partition per UTC day, so
-- the partitions that take new rows keep small indexes however much history is stored, and
-- retention drops a whole day instead of deleting its rows one by one.
--
-- The partition key is the id itself. Ids are time-ordered UUIDs (version 7, the first 48
-- bits are Unix milliseconds; core/ids.py): a lookup by id prunes to one partition and the
-- primary keys stay (id). A run's tasks carry the run's time prefix, and task events are
-- partitioned by task_id, so a run, its tasks and their events always share one day.
--
-- Rows written before this migration have random (version 4) ids; they are moved to each
-- table's DEFAULT partition, which also catches any row whose day has no partition yet.
-- Day partitions are created by hewer_ensure_partitions() (at engine start and by the
-- retention loop), never for a day the DEFAULT partition already holds rows of.
--
-- Partitioned tables cannot enforce a unique key that leaves out the partition key, and a
-- foreign key that points at a partitioned table makes dropping a partition scan every
-- referencing table. So:
--   * (tenant_id, dedupe_key) of child runs is no longer a unique index: a child run's id is
--     derived from it instead, so a repeated spawn hits the primary key;
--   * (workflow_run_id, step_id) of tasks is unique in each partition (a run's tasks share
--     its partition), an index per partition rather than one on the partitioned table;
--   * foreign keys that pointed at workflow_runs or tasks become AFTER DELETE triggers that
--     delete the dependent rows (what ON DELETE CASCADE did), and nothing is checked when a
--     row is inserted (which also saves about ten foreign-key lookups per task).

-- 1. Set the old tables aside.
ALTER TABLE concurrency_slots DROP CONSTRAINT concurrency_slots_run_id_fkey;
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_run_id_fkey;
ALTER TABLE durable_branches DROP CONSTRAINT durable_branches_task_id_fkey;
ALTER TABLE durable_entries DROP CONSTRAINT durable_entries_task_id_fkey;
ALTER TABLE durable_logs DROP CONSTRAINT durable_logs_task_id_fkey;
ALTER TABLE log_lines DROP CONSTRAINT log_lines_task_id_fkey;
ALTER TABLE queue_items DROP CONSTRAINT queue_items_task_id_fkey;
ALTER TABLE task_matches DROP CONSTRAINT task_matches_task_id_fkey;

ALTER TABLE workflow_runs RENAME TO legacy_workflow_runs;
ALTER TABLE tasks RENAME TO legacy_tasks;
ALTER TABLE task_events RENAME TO legacy_task_events;
-- the events keep numbering from where they were (a sequence of its own rather than an
-- identity column: partitioned tables take identity columns only from PostgreSQL 17 on)
ALTER TABLE legacy_task_events ALTER COLUMN id DROP IDENTITY;
CREATE SEQUENCE task_events_id_seq AS bigint;

-- 2. The partitioned tables (same columns, same order).
CREATE TABLE workflow_runs (
    id uuid NOT NULL,
    tenant_id uuid NOT NULL,
    workflow_id uuid NOT NULL,
    workflow_version_id uuid NOT NULL,
    status text DEFAULT 'QUEUED' NOT NULL,
    input jsonb DEFAULT '{}' NOT NULL,
    additional_metadata jsonb DEFAULT '{}' NOT NULL,
    priority smallint DEFAULT 1 NOT NULL,
    parent_task_id uuid,
    parent_run_id uuid,
    child_index integer,
    child_key text,
    dedupe_key text,
    desired_worker_id uuid,
    desired_worker_labels jsonb,
    triggering_event_id uuid,
    triggering_event_key text,
    created_at timestamptz DEFAULT now() NOT NULL,
    started_at timestamptz,
    finished_at timestamptz,
    gated boolean DEFAULT false NOT NULL,
    idempotency_key text,
    CONSTRAINT workflow_runs_status_check
        CHECK (status IN ('QUEUED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED'))
) PARTITION BY RANGE (id);

CREATE TABLE tasks (
    id uuid NOT NULL,
    tenant_id uuid NOT NULL,
    workflow_run_id uuid NOT NULL,
    step_id uuid NOT NULL,
    readable_id text NOT NULL,
    action_id text NOT NULL,
    status text NOT NULL,
    retry_count integer DEFAULT 0 NOT NULL,
    app_retry_count integer DEFAULT 0 NOT NULL,
    priority smallint DEFAULT 1 NOT NULL,
    payload_extra jsonb DEFAULT '{}' NOT NULL,
    output text,
    error text,
    is_skipped boolean DEFAULT false NOT NULL,
    worker_id uuid,
    slot_held boolean DEFAULT false NOT NULL,
    slot_requests jsonb DEFAULT '{"default": 1}' NOT NULL,
    timeout_seconds integer DEFAULT 60 NOT NULL,
    invocation_count integer DEFAULT 0 NOT NULL,
    created_at timestamptz DEFAULT now() NOT NULL,
    queued_at timestamptz,
    assigned_at timestamptz,
    started_at timestamptz,
    finished_at timestamptz,
    timeout_at timestamptz,
    gated boolean DEFAULT false NOT NULL,
    queue_order bigint,
    batch_id uuid,
    batch_key text,
    CONSTRAINT tasks_status_check CHECK (status IN
        ('QUEUED', 'WAITING', 'RUNNING', 'EVICTED', 'COMPLETED', 'FAILED', 'CANCELLED'))
) PARTITION BY RANGE (id);

CREATE TABLE task_events (
    id bigint DEFAULT nextval('task_events_id_seq') NOT NULL,
    tenant_id uuid NOT NULL,
    task_id uuid NOT NULL,
    workflow_run_id uuid NOT NULL,
    retry_count integer NOT NULL,
    event_type text NOT NULL,
    message text DEFAULT '' NOT NULL,
    output text,
    worker_id uuid,
    created_at timestamptz DEFAULT now() NOT NULL
) PARTITION BY RANGE (task_id);

CREATE TABLE workflow_runs_default PARTITION OF workflow_runs DEFAULT;
CREATE TABLE tasks_default PARTITION OF tasks DEFAULT;
CREATE TABLE task_events_default PARTITION OF task_events DEFAULT;

-- 3. Move the rows (all into the DEFAULT partitions: no day partition exists yet).
INSERT INTO workflow_runs SELECT * FROM legacy_workflow_runs;
INSERT INTO tasks SELECT * FROM legacy_tasks;
INSERT INTO task_events SELECT * FROM legacy_task_events;
SELECT setval('task_events_id_seq', coalesce((SELECT max(id) FROM legacy_task_events), 0) + 1,
              false);
ALTER SEQUENCE task_events_id_seq OWNED BY task_events.id;

DROP TABLE legacy_task_events;
DROP TABLE legacy_tasks;
DROP TABLE legacy_workflow_runs;

-- 4. Keys, indexes, the foreign keys that point outwards, triggers.
ALTER TABLE workflow_runs ADD CONSTRAINT workflow_runs_pkey PRIMARY KEY (id);
ALTER TABLE tasks ADD CONSTRAINT tasks_pkey PRIMARY KEY (id);
-- events are read per task in order; no other lookup goes by the event id alone
ALTER TABLE task_events ADD CONSTRAINT task_events_pkey PRIMARY KEY (task_id, id);

CREATE INDEX workflow_runs_event_idx ON workflow_runs (triggering_event_id)
    WHERE triggering_event_id IS NOT NULL;
CREATE INDEX workflow_runs_finished_idx ON workflow_runs (finished_at)
    WHERE finished_at IS NOT NULL;
CREATE INDEX workflow_runs_parent_task_idx ON workflow_runs (parent_task_id)
    WHERE parent_task_id IS NOT NULL;
CREATE INDEX workflow_runs_tenant_created_idx ON workflow_runs (tenant_id, created_at DESC);
CREATE UNIQUE INDEX tasks_default_run_step_key ON tasks_default (workflow_run_id, step_id);
CREATE INDEX tasks_running_batches_idx ON tasks (tenant_id, action_id, batch_key)
    WHERE status = 'RUNNING' AND batch_id IS NOT NULL;
CREATE INDEX tasks_tenant_created_idx ON tasks (tenant_id, created_at DESC);
CREATE INDEX tasks_timeout_idx ON tasks (timeout_at) WHERE status = 'RUNNING';
CREATE INDEX tasks_worker_held_idx ON tasks (worker_id) WHERE slot_held;
CREATE INDEX task_events_run_idx ON task_events (workflow_run_id, id);

ALTER TABLE workflow_runs ADD CONSTRAINT workflow_runs_tenant_id_fkey
    FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE;
ALTER TABLE workflow_runs ADD CONSTRAINT workflow_runs_workflow_id_fkey
    FOREIGN KEY (workflow_id) REFERENCES workflows (id) ON DELETE CASCADE;
ALTER TABLE workflow_runs ADD CONSTRAINT workflow_runs_workflow_version_id_fkey
    FOREIGN KEY (workflow_version_id) REFERENCES workflow_versions (id) ON DELETE CASCADE;
ALTER TABLE tasks ADD CONSTRAINT tasks_step_id_fkey
    FOREIGN KEY (step_id) REFERENCES steps (id) ON DELETE CASCADE;
ALTER TABLE tasks ADD CONSTRAINT tasks_tenant_id_fkey
    FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE;

CREATE TRIGGER tasks_release_concurrency AFTER UPDATE OF status, retry_count ON tasks
    FOR EACH ROW
    WHEN (NEW.gated AND (NEW.status IN ('COMPLETED', 'FAILED', 'CANCELLED')
                         OR NEW.retry_count <> OLD.retry_count))
    EXECUTE FUNCTION release_concurrency_slots();
CREATE TRIGGER workflow_runs_child_finished AFTER UPDATE OF status ON workflow_runs
    FOR EACH ROW
    WHEN (NEW.parent_task_id IS NOT NULL AND NEW.status IN ('COMPLETED', 'FAILED', 'CANCELLED')
          AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION hewer_child_run_finished();
CREATE TRIGGER workflow_runs_release_concurrency AFTER UPDATE OF status ON workflow_runs
    FOR EACH ROW
    WHEN (NEW.gated AND NEW.status IN ('COMPLETED', 'FAILED', 'CANCELLED'))
    EXECUTE FUNCTION release_concurrency_slots();
CREATE TRIGGER workflow_runs_release_idempotency_key AFTER UPDATE OF status ON workflow_runs
    FOR EACH ROW
    WHEN (NEW.idempotency_key IS NOT NULL AND NEW.status IN ('COMPLETED', 'FAILED', 'CANCELLED')
          AND OLD.status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED'))
    EXECUTE FUNCTION release_idempotency_key();

-- 5. What ON DELETE CASCADE did for rows deleted one by one (retention of the DEFAULT
-- partition, deleted workflows and tenants, replays); dropped partitions take their
-- dependents with them in hewer_drop_day_partitions().
CREATE FUNCTION hewer_run_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM tasks WHERE workflow_run_id = OLD.id;
    DELETE FROM concurrency_slots WHERE run_id = OLD.id;
    DELETE FROM idempotency_keys WHERE run_id = OLD.id;
    RETURN NULL;
END
$$;

CREATE FUNCTION hewer_task_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM task_events WHERE task_id = OLD.id;
    DELETE FROM log_lines WHERE task_id = OLD.id;
    DELETE FROM queue_items WHERE task_id = OLD.id;
    DELETE FROM task_matches WHERE task_id = OLD.id;
    DELETE FROM durable_entries WHERE task_id = OLD.id;
    DELETE FROM durable_branches WHERE task_id = OLD.id;
    DELETE FROM durable_logs WHERE task_id = OLD.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER workflow_runs_deleted AFTER DELETE ON workflow_runs
    FOR EACH ROW EXECUTE FUNCTION hewer_run_deleted();
CREATE TRIGGER tasks_deleted AFTER DELETE ON tasks
    FOR EACH ROW EXECUTE FUNCTION hewer_task_deleted();

-- task_matches had only partial indexes on task_id (the other tables lead theirs with it)
CREATE INDEX task_matches_task_idx ON task_matches (task_id);

-- 6. Partition management.
-- The smallest version-7 id stamped at `at` (bounds of the day partitions).
CREATE FUNCTION hewer_uuid_floor(at timestamptz) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (lpad(to_hex(floor(extract(epoch FROM at) * 1000)::bigint), 12, '0')
            || '00000000000000000000')::uuid
$$;

-- Creates the partitions of `days` UTC days from `first_day` that do not exist yet, for
-- the three tables together. A day whose range already has rows in a DEFAULT partition
-- is skipped (PostgreSQL would refuse the partition); its rows stay in DEFAULT.
-- Returns the days created.
CREATE FUNCTION hewer_ensure_partitions(first_day date, days integer) RETURNS SETOF date
LANGUAGE plpgsql AS $$
DECLARE
    day date;
    lower_bound uuid;
    upper_bound uuid;
    suffix text;
BEGIN
    -- replicas starting together would race between the check and the CREATE
    PERFORM pg_advisory_xact_lock(hashtext('hewer_partitions'));
    FOR i IN 0 .. days - 1 LOOP
        day := first_day + i;
        suffix := to_char(day, 'YYYYMMDD');
        CONTINUE WHEN to_regclass('workflow_runs_p' || suffix) IS NOT NULL;
        lower_bound := hewer_uuid_floor(day::timestamp AT TIME ZONE 'UTC');
        upper_bound := hewer_uuid_floor((day + 1)::timestamp AT TIME ZONE 'UTC');
        IF EXISTS (SELECT 1 FROM workflow_runs_default
                   WHERE id >= lower_bound AND id < upper_bound)
           OR EXISTS (SELECT 1 FROM tasks_default WHERE id >= lower_bound AND id < upper_bound)
           OR EXISTS (SELECT 1 FROM task_events_default
                      WHERE task_id >= lower_bound AND task_id < upper_bound) THEN
            RAISE NOTICE 'hewer: rows of % are in the DEFAULT partitions; no partition for it',
                day;
            CONTINUE;
        END IF;
        EXECUTE format('CREATE TABLE %I PARTITION OF workflow_runs FOR VALUES FROM (%L) TO (%L)',
                       'workflow_runs_p' || suffix, lower_bound, upper_bound);
        EXECUTE format('CREATE TABLE %I PARTITION OF tasks FOR VALUES FROM (%L) TO (%L)',
                       'tasks_p' || suffix, lower_bound, upper_bound);
        EXECUTE format('CREATE UNIQUE INDEX %I ON %I (workflow_run_id, step_id)',
                       'tasks_p' || suffix || '_run_step_key', 'tasks_p' || suffix);
        EXECUTE format('CREATE TABLE %I PARTITION OF task_events FOR VALUES FROM (%L) TO (%L)',
                       'task_events_p' || suffix, lower_bound, upper_bound);
        RETURN NEXT day;
    END LOOP;
END
$$;

-- The days that have partitions, oldest first.
CREATE FUNCTION hewer_partition_days() RETURNS SETOF date
LANGUAGE sql STABLE AS $$
    SELECT to_date(substr(c.relname, length('workflow_runs_p') + 1), 'YYYYMMDD') AS day
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    JOIN pg_class parent ON parent.oid = i.inhparent  -- (no ::regclass: checked at creation)
    WHERE parent.relname = 'workflow_runs' AND c.relname ~ '^workflow_runs_p[0-9]{8}$'
    ORDER BY day
$$;

-- Drops the partitions of `day` with their dependent rows, if every run in it is final and
-- finished before its tenant's cutoff (`tenant_ids` with `cutoffs`; a run of a tenant not
-- listed keeps the day). Returns the number of runs dropped, or -1 when the day is kept.
CREATE FUNCTION hewer_drop_day_partitions(day date, tenant_ids uuid[], cutoffs timestamptz[])
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    suffix text := to_char(day, 'YYYYMMDD');
    lower_bound uuid := hewer_uuid_floor(day::timestamp AT TIME ZONE 'UTC');
    upper_bound uuid := hewer_uuid_floor((day + 1)::timestamp AT TIME ZONE 'UTC');
    blocked boolean;
    dropped bigint;
BEGIN
    IF to_regclass('workflow_runs_p' || suffix) IS NULL THEN
        RETURN -1;
    END IF;
    -- wait for (rather than queue behind) long transactions: the next pass tries again
    PERFORM set_config('lock_timeout', '2s', true);
    EXECUTE format(
        'SELECT EXISTS (SELECT 1 FROM %I r
                        LEFT JOIN unnest($1::uuid[], $2::timestamptz[]) AS c(tenant_id, cutoff)
                               ON c.tenant_id = r.tenant_id
                        WHERE r.finished_at IS NULL OR c.cutoff IS NULL
                           OR r.finished_at >= c.cutoff),
                (SELECT count(*) FROM %I)',
        'workflow_runs_p' || suffix, 'workflow_runs_p' || suffix)
    INTO blocked, dropped USING tenant_ids, cutoffs;
    IF blocked THEN
        RETURN -1;
    END IF;
    DELETE FROM log_lines WHERE task_id >= lower_bound AND task_id < upper_bound;
    DELETE FROM queue_items WHERE task_id >= lower_bound AND task_id < upper_bound;
    DELETE FROM task_matches WHERE task_id >= lower_bound AND task_id < upper_bound;
    DELETE FROM durable_entries WHERE task_id >= lower_bound AND task_id < upper_bound;
    DELETE FROM durable_branches WHERE task_id >= lower_bound AND task_id < upper_bound;
    DELETE FROM durable_logs WHERE task_id >= lower_bound AND task_id < upper_bound;
    DELETE FROM concurrency_slots WHERE run_id >= lower_bound AND run_id < upper_bound;
    DELETE FROM idempotency_keys WHERE run_id >= lower_bound AND run_id < upper_bound;
    EXECUTE format('DROP TABLE %I', 'task_events_p' || suffix);
    EXECUTE format('DROP TABLE %I', 'tasks_p' || suffix);
    EXECUTE format('DROP TABLE %I', 'workflow_runs_p' || suffix);
    RETURN dropped;
END
$$;
