-- Creating or dropping a day's partitions takes ACCESS EXCLUSIVE locks on the three parent
-- tables (CREATE TABLE ... PARTITION OF and DROP TABLE of a partition lock their parent).
-- While such a statement waits for one of those locks, behind a long reader such as a
-- report or pg_dump, every later statement on a table it already holds or waits for queues
-- behind it: the hot path stopped. Creating partitions waited without limit (found by
-- tests/integration/test_partitions.py: a reader held `tasks` open, the creation held
-- `workflow_runs` and every run's write waited for the reader); dropping waited 2 s for each
-- table in turn, and a timeout failed the whole retention pass.
--
-- Now both functions take the three parent locks in one statement, in a fixed order, only
-- once there is something to do, and wait at most the caller's `lock_wait` for them (well
-- below deadlock_timeout: a hot transaction is never the one a deadlock aborts). A lock not
-- granted in time raises lock_not_available (55P03) and rolls the call back: the caller tries
-- again a moment later or leaves the work to its next pass (services/retention.py). A NULL
-- `lock_wait` waits as long as the session's lock_timeout (tools that load data).

-- The lock_timeout of the rest of the transaction: `lock_wait` (at least 1 ms), or the
-- session's own when NULL.
CREATE FUNCTION hewer_limit_lock_wait(lock_wait interval) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF lock_wait IS NOT NULL THEN
        PERFORM set_config(
            'lock_timeout',
            greatest(1, round(extract(epoch FROM lock_wait) * 1000))::text || 'ms', true);
    END IF;
END
$$;

-- Whether a DEFAULT partition holds rows of the id range [lower_bound, upper_bound), for
-- which PostgreSQL would refuse a partition. (PL/pgSQL: its body is not checked against the
-- tables when created, so schema.sql can create it before them.)
CREATE FUNCTION hewer_default_holds(lower_bound uuid, upper_bound uuid) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM workflow_runs_default
                   WHERE id >= lower_bound AND id < upper_bound)
        OR EXISTS (SELECT 1 FROM tasks_default WHERE id >= lower_bound AND id < upper_bound)
        OR EXISTS (SELECT 1 FROM task_events_default
                   WHERE task_id >= lower_bound AND task_id < upper_bound);
END
$$;

DROP FUNCTION hewer_ensure_partitions(date, integer);

-- Creates the partitions of `days` UTC days from `first_day` that do not exist yet, for
-- the three tables together. A day whose range already has rows in a DEFAULT partition
-- is skipped (PostgreSQL would refuse the partition); its rows stay in DEFAULT.
-- Returns the days created.
CREATE FUNCTION hewer_ensure_partitions(first_day date, days integer,
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
            LOCK TABLE ONLY workflow_runs, ONLY tasks, ONLY task_events
                IN ACCESS EXCLUSIVE MODE;
            locked := true;
            -- rows of this day may have reached DEFAULT while the lock was awaited
            CONTINUE WHEN hewer_default_holds(lower_bound, upper_bound);
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

DROP FUNCTION hewer_drop_day_partitions(date, uuid[], timestamptz[]);

-- Drops the partitions of `day` with their dependent rows, if every run in it is final and
-- finished before its tenant's cutoff (`tenant_ids` with `cutoffs`; a run of a tenant not
-- listed keeps the day). Returns the number of runs dropped, or -1 when the day is kept.
CREATE FUNCTION hewer_drop_day_partitions(day date, tenant_ids uuid[], cutoffs timestamptz[],
                                          lock_wait interval DEFAULT NULL)
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
    PERFORM hewer_limit_lock_wait(lock_wait);
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
    -- last, and all three at once: from here to the commit nothing else runs on them
    LOCK TABLE ONLY workflow_runs, ONLY tasks, ONLY task_events IN ACCESS EXCLUSIVE MODE;
    EXECUTE format('DROP TABLE %I', 'task_events_p' || suffix);
    EXECUTE format('DROP TABLE %I', 'tasks_p' || suffix);
    EXECUTE format('DROP TABLE %I', 'workflow_runs_p' || suffix);
    RETURN dropped;
END
$$;
