-- User events partitioned by UTC day like runs, tasks and task events (migration 0016), so
-- that retention drops a day of events with that day's runs instead of deleting them in
-- batches of 500 rows (each delete also had three index entries to remove and left them to
-- vacuum). Event ids are time-ordered UUIDs already (core/ids.py new_event_id), so the id is
-- the partition key and a lookup by id prunes to one partition.
--
-- A day has partitions of all four tables or of none: hewer_ensure_partitions() creates the
-- event partition with the others and skips a day whose rows any DEFAULT partition holds;
-- hewer_drop_day_partitions() drops it with the others once every run of the day is final
-- and every run and event is past its tenant's retention.
--
-- Nothing points at events with a foreign key (workflow_runs.triggering_event_id is a plain
-- column), so dropping an event partition scans no other table.
--
-- The old events_created_idx (created_at alone) is not carried over: every read of events
-- names the tenant and uses (tenant_id, created_at) or the id; one index entry less per event.

-- 1. The old table aside, the partitioned one in its place (same columns, same order).
ALTER TABLE events RENAME TO legacy_events;

CREATE TABLE events (
    id uuid NOT NULL,
    tenant_id uuid NOT NULL,
    key text NOT NULL,
    payload jsonb DEFAULT '{}' NOT NULL,
    additional_metadata jsonb DEFAULT '{}' NOT NULL,
    priority smallint,
    scope text,
    created_at timestamptz DEFAULT now() NOT NULL,
    triggering_webhook_name text
) PARTITION BY RANGE (id);

CREATE TABLE events_default PARTITION OF events DEFAULT;

-- 2. The days that have run partitions get an event partition before the rows move, so that
-- events of those days land in their day (rows with random ids, from before 0016, and rows of
-- days without partitions go to DEFAULT).
DO $$
DECLARE
    day date;
BEGIN
    FOR day IN SELECT hewer_partition_days() LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                       'events_p' || to_char(day, 'YYYYMMDD'),
                       hewer_uuid_floor(day::timestamp AT TIME ZONE 'UTC'),
                       hewer_uuid_floor((day + 1)::timestamp AT TIME ZONE 'UTC'));
    END LOOP;
END
$$;

INSERT INTO events SELECT * FROM legacy_events;
DROP TABLE legacy_events;

-- 3. Keys and indexes.
ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY (id);
CREATE INDEX events_tenant_created_idx ON events (tenant_id, created_at DESC);
CREATE INDEX events_tenant_scope_idx ON events (tenant_id, scope) WHERE scope IS NOT NULL;
ALTER TABLE events ADD CONSTRAINT events_tenant_id_fkey
    FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE;

-- 4. Partition management covers events.
CREATE OR REPLACE FUNCTION hewer_default_holds(lower_bound uuid, upper_bound uuid)
RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM workflow_runs_default
                   WHERE id >= lower_bound AND id < upper_bound)
        OR EXISTS (SELECT 1 FROM tasks_default WHERE id >= lower_bound AND id < upper_bound)
        OR EXISTS (SELECT 1 FROM task_events_default
                   WHERE task_id >= lower_bound AND task_id < upper_bound)
        OR EXISTS (SELECT 1 FROM events_default WHERE id >= lower_bound AND id < upper_bound);
END
$$;

-- Creates the partitions of `days` UTC days from `first_day` that do not exist yet, for
-- the four tables together. A day whose range already has rows in a DEFAULT partition
-- is skipped (PostgreSQL would refuse the partition); its rows stay in DEFAULT.
-- Returns the days created. The parent tables are locked in the order an event push
-- takes them (the event, then its runs), at most `lock_wait` (migration 0018).
CREATE OR REPLACE FUNCTION hewer_ensure_partitions(first_day date, days integer,
                                                   lock_wait interval DEFAULT NULL)
RETURNS SETOF date LANGUAGE plpgsql AS $$
DECLARE
    day date;
    lower_bound uuid;
    upper_bound uuid;
    suffix text;
    locked boolean := false;
BEGIN
    -- replicas starting together would race between the check and the CREATE
    PERFORM pg_advisory_xact_lock(hashtext('hewer_partitions'));
    FOR i IN 0 .. days - 1 LOOP
        day := first_day + i;
        suffix := to_char(day, 'YYYYMMDD');
        CONTINUE WHEN to_regclass('workflow_runs_p' || suffix) IS NOT NULL;
        lower_bound := hewer_uuid_floor(day::timestamp AT TIME ZONE 'UTC');
        upper_bound := hewer_uuid_floor((day + 1)::timestamp AT TIME ZONE 'UTC');
        IF hewer_default_holds(lower_bound, upper_bound) THEN
            RAISE NOTICE 'hewer: rows of % are in the DEFAULT partitions; no partition for it',
                day;
            CONTINUE;
        END IF;
        IF NOT locked THEN
            PERFORM hewer_limit_lock_wait(lock_wait);
            LOCK TABLE ONLY events, ONLY workflow_runs, ONLY tasks, ONLY task_events
                IN ACCESS EXCLUSIVE MODE;
            locked := true;
            -- rows of this day may have reached DEFAULT while the lock was awaited
            CONTINUE WHEN hewer_default_holds(lower_bound, upper_bound);
        END IF;
        EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                       'events_p' || suffix, lower_bound, upper_bound);
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

DROP FUNCTION hewer_drop_day_partitions(date, uuid[], timestamptz[], interval);

-- Drops the partitions of `day` with their dependent rows, if every run in it is final and
-- finished before its tenant's cutoff and every event was stored before it (`tenant_ids`
-- with `cutoffs`; a run or event of a tenant not listed keeps the day). Returns the numbers
-- of runs and events dropped; runs is -1 when the day is kept.
CREATE FUNCTION hewer_drop_day_partitions(day date, tenant_ids uuid[], cutoffs timestamptz[],
                                          lock_wait interval DEFAULT NULL,
                                          OUT runs bigint, OUT events bigint)
LANGUAGE plpgsql AS $$
DECLARE
    suffix text := to_char(day, 'YYYYMMDD');
    lower_bound uuid := hewer_uuid_floor(day::timestamp AT TIME ZONE 'UTC');
    upper_bound uuid := hewer_uuid_floor((day + 1)::timestamp AT TIME ZONE 'UTC');
    blocked boolean;
BEGIN
    runs := -1;
    events := 0;
    IF to_regclass('workflow_runs_p' || suffix) IS NULL THEN
        RETURN;
    END IF;
    PERFORM hewer_limit_lock_wait(lock_wait);
    EXECUTE format(
        'SELECT EXISTS (SELECT 1 FROM %I r
                        LEFT JOIN unnest($1::uuid[], $2::timestamptz[]) AS c(tenant_id, cutoff)
                               ON c.tenant_id = r.tenant_id
                        WHERE r.finished_at IS NULL OR c.cutoff IS NULL
                           OR r.finished_at >= c.cutoff)
             OR EXISTS (SELECT 1 FROM %I e
                        LEFT JOIN unnest($1::uuid[], $2::timestamptz[]) AS c(tenant_id, cutoff)
                               ON c.tenant_id = e.tenant_id
                        WHERE c.cutoff IS NULL OR e.created_at >= c.cutoff),
                (SELECT count(*) FROM %I), (SELECT count(*) FROM %I)',
        'workflow_runs_p' || suffix, 'events_p' || suffix,
        'workflow_runs_p' || suffix, 'events_p' || suffix)
    INTO blocked, runs, events USING tenant_ids, cutoffs;
    IF blocked THEN
        runs := -1;
        events := 0;
        RETURN;
    END IF;
    DELETE FROM log_lines WHERE task_id >= lower_bound AND task_id < upper_bound;
    DELETE FROM queue_items WHERE task_id >= lower_bound AND task_id < upper_bound;
    DELETE FROM task_matches WHERE task_id >= lower_bound AND task_id < upper_bound;
    DELETE FROM durable_entries WHERE task_id >= lower_bound AND task_id < upper_bound;
    DELETE FROM durable_branches WHERE task_id >= lower_bound AND task_id < upper_bound;
    DELETE FROM durable_logs WHERE task_id >= lower_bound AND task_id < upper_bound;
    DELETE FROM concurrency_slots WHERE run_id >= lower_bound AND run_id < upper_bound;
    DELETE FROM idempotency_keys WHERE run_id >= lower_bound AND run_id < upper_bound;
    -- last, and all four at once: from here to the commit nothing else runs on them
    LOCK TABLE ONLY events, ONLY workflow_runs, ONLY tasks, ONLY task_events
        IN ACCESS EXCLUSIVE MODE;
    EXECUTE format('DROP TABLE %I', 'task_events_p' || suffix);
    EXECUTE format('DROP TABLE %I', 'tasks_p' || suffix);
    EXECUTE format('DROP TABLE %I', 'workflow_runs_p' || suffix);
    EXECUTE format('DROP TABLE %I', 'events_p' || suffix);
END
$$;
