-- Crons, scheduled runs, workflow pause, rate limits, retention and metrics reads.

-- name: delete_stale_code_crons
DELETE FROM crons
WHERE workflow_id = $1 AND origin = 'code' AND NOT (expression = ANY($2::text[]));

-- name: upsert_code_crons
-- next_fire_at is kept on conflict: re-registering must not move (or re-fire) a tick.
INSERT INTO crons
    (tenant_id, workflow_id, name, expression, input, additional_metadata, priority, origin,
     next_fire_at)
SELECT $1, $2, '', e.expression, $3::jsonb, '{}', $4, 'code', e.next_fire_at
FROM unnest($5::text[], $6::timestamptz[]) AS e(expression, next_fire_at)
ON CONFLICT (workflow_id, name, expression) DO UPDATE
SET input = EXCLUDED.input, priority = EXCLUDED.priority, updated_at = now()
WHERE crons.origin = 'code';

-- name: insert_api_cron
INSERT INTO crons
    (tenant_id, workflow_id, name, expression, input, additional_metadata, priority, origin,
     next_fire_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, 'api', $8)
ON CONFLICT (workflow_id, name, expression) DO NOTHING
RETURNING id;

-- name: get_cron
SELECT c.id, c.tenant_id, c.workflow_id, w.name AS workflow_name,
       w.latest_version_id AS version_id,
       c.name, c.expression, c.input, c.additional_metadata, c.priority, c.origin, c.enabled,
       c.next_fire_at, c.created_at, c.updated_at
FROM crons c
JOIN workflows w ON w.id = c.workflow_id
WHERE c.id = ANY($2::uuid[]) AND c.tenant_id = $1;

-- name: page_crons
-- $4: (key, value) metadata pairs flattened as [k1, v1, k2, v2...], all must match.
SELECT c.id, count(*) OVER () AS total
FROM crons c
JOIN workflows w ON w.id = c.workflow_id
WHERE c.tenant_id = $1
  AND ($2::uuid IS NULL OR c.workflow_id = $2)
  AND ($3::text IS NULL OR w.name = $3)
  AND ($4::text IS NULL OR c.name = $4)
  AND ($5::jsonb IS NULL OR c.additional_metadata @> $5::jsonb)
ORDER BY
    CASE WHEN $6 = 'name' AND $7 = 'ASC' THEN c.name END ASC,
    CASE WHEN $6 = 'name' AND $7 = 'DESC' THEN c.name END DESC,
    CASE WHEN $6 = 'createdAt' AND $7 = 'ASC' THEN c.created_at END ASC,
    c.created_at DESC, c.id
OFFSET $8 LIMIT $9;

-- name: delete_cron
DELETE FROM crons WHERE id = $1 AND tenant_id = $2 RETURNING id;

-- name: set_cron_enabled
-- Re-enabling starts from the next tick after now: ticks missed while disabled do not fire.
UPDATE crons
SET enabled = $3, next_fire_at = CASE WHEN $3 AND NOT enabled THEN $4 ELSE next_fire_at END,
    updated_at = now()
WHERE id = $1 AND tenant_id = $2
RETURNING id;

-- name: claim_due_crons
SELECT c.id, c.tenant_id, c.workflow_id, w.name AS workflow_name, c.expression,
       c.input::text AS input, c.additional_metadata::text AS additional_metadata, c.priority,
       c.next_fire_at, w.is_paused, w.paused_cron_behavior, clock_timestamp() AS db_now
FROM crons c
JOIN workflows w ON w.id = c.workflow_id
WHERE c.enabled AND c.next_fire_at <= clock_timestamp()
ORDER BY c.next_fire_at
LIMIT $1
FOR UPDATE OF c SKIP LOCKED;

-- name: advance_cron
UPDATE crons
SET next_fire_at = $2, last_fired_at = CASE WHEN $3 THEN clock_timestamp() ELSE last_fired_at END
WHERE id = $1;

-- name: insert_scheduled_runs
INSERT INTO scheduled_runs
    (id, tenant_id, workflow_id, trigger_at, input, additional_metadata, priority, origin,
     parent_task_id)
SELECT s.id, $1, $2, s.trigger_at, $3, $4, $5, 'api', $6
FROM unnest($7::uuid[], $8::timestamptz[]) AS s(id, trigger_at);

-- name: get_scheduled
SELECT s.id, s.tenant_id, s.workflow_id, w.name AS workflow_name,
       w.latest_version_id AS version_id,
       s.trigger_at, s.input, s.additional_metadata, s.priority, s.origin, s.status,
       s.workflow_run_id, s.created_at, s.updated_at,
       r.status AS run_status, r.created_at AS run_created_at
FROM scheduled_runs s
JOIN workflows w ON w.id = s.workflow_id
LEFT JOIN workflow_runs r ON r.id = s.workflow_run_id
WHERE s.id = ANY($2::uuid[]) AND s.tenant_id = $1;

-- name: page_scheduled
-- $5: run statuses as the REST enum (SCHEDULED, or a workflow-run status).
SELECT s.id, count(*) OVER () AS total
FROM scheduled_runs s
LEFT JOIN workflow_runs r ON r.id = s.workflow_run_id
WHERE s.tenant_id = $1
  AND ($2::uuid IS NULL OR s.workflow_id = $2)
  AND ($3::uuid IS NULL OR s.parent_task_id = $3)
  AND ($4::jsonb IS NULL OR s.additional_metadata @> $4::jsonb)
  AND ($5::text[] IS NULL
       OR (s.status = 'SCHEDULED' AND 'SCHEDULED' = ANY($5::text[]))
       OR (s.status = 'CANCELLED' AND s.workflow_run_id IS NULL
           AND 'CANCELLED' = ANY($5::text[]))
       OR r.status = ANY($5::text[])
       OR (r.status = 'COMPLETED' AND 'SUCCEEDED' = ANY($5::text[])))
ORDER BY
    CASE WHEN $6 = 'createdAt' AND $7 = 'ASC' THEN s.created_at END ASC,
    CASE WHEN $6 = 'createdAt' AND $7 = 'DESC' THEN s.created_at END DESC,
    CASE WHEN $6 = 'triggerAt' AND $7 = 'DESC' THEN s.trigger_at END DESC,
    s.trigger_at ASC, s.id
OFFSET $8 LIMIT $9;

-- name: reschedule
UPDATE scheduled_runs SET trigger_at = $3, updated_at = now()
WHERE id = $1 AND tenant_id = $2 AND status = 'SCHEDULED'
RETURNING id;

-- name: scheduled_state
SELECT id, status, origin FROM scheduled_runs WHERE id = $1 AND tenant_id = $2;

-- name: delete_scheduled
DELETE FROM scheduled_runs WHERE tenant_id = $1 AND id = ANY($2::uuid[]) RETURNING id;

-- name: claim_due_schedules
SELECT s.id, s.tenant_id, s.workflow_id, w.name AS workflow_name, s.trigger_at,
       s.input::text AS input, s.additional_metadata::text AS additional_metadata, s.priority,
       w.is_paused, w.paused_scheduled_behavior, clock_timestamp() AS db_now
FROM scheduled_runs s
JOIN workflows w ON w.id = s.workflow_id
WHERE s.status = 'SCHEDULED' AND s.trigger_at <= clock_timestamp()
ORDER BY s.trigger_at
LIMIT $1
FOR UPDATE OF s SKIP LOCKED;

-- name: mark_schedule_fired
UPDATE scheduled_runs
SET status = $2, workflow_run_id = $3, fired_at = clock_timestamp(), updated_at = now()
WHERE id = $1;

-- name: seconds_to_next_due
-- Seconds until the nearest cron tick, scheduled run or paused-item expiry (NULL: none).
SELECT extract(epoch FROM least(
    (SELECT min(next_fire_at) FROM crons WHERE enabled),
    (SELECT min(trigger_at) FROM scheduled_runs WHERE status = 'SCHEDULED'),
    (SELECT min(pause_expires_at) FROM queue_items WHERE paused)
) - clock_timestamp())::float8;

-- name: expired_paused_items
SELECT task_id, tenant_id FROM queue_items
WHERE paused AND pause_expires_at < clock_timestamp()
LIMIT $1;

-- name: pause_workflow
UPDATE workflows
SET is_paused = true, paused_queue_ttl_seconds = $3, paused_cron_behavior = $4,
    paused_scheduled_behavior = $5, updated_at = now()
WHERE id = $1 AND tenant_id = $2
RETURNING id;

-- name: unpause_workflow
UPDATE workflows SET is_paused = false, updated_at = now()
WHERE id = $1 AND tenant_id = $2
RETURNING id;

-- name: lock_workflow_for_pause
-- FOR UPDATE conflicts with the key-share lock that inserting a run takes on its workflow,
-- so a trigger in flight finishes first and a later one sees the new pause state.
SELECT id FROM workflows WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL FOR UPDATE;

-- name: set_aside_workflow_items
UPDATE queue_items q
SET paused = true, pause_expires_at = now() + make_interval(secs => $2)
FROM tasks t
JOIN workflow_runs r ON r.id = t.workflow_run_id
WHERE q.task_id = t.id AND r.workflow_id = $1 AND NOT q.paused;

-- name: restore_workflow_items
UPDATE queue_items q
SET paused = false, pause_expires_at = NULL
FROM tasks t
JOIN workflow_runs r ON r.id = t.workflow_run_id
WHERE q.task_id = t.id AND r.workflow_id = $1 AND q.paused
RETURNING q.id;

-- name: delete_workflow
-- A soft delete (see migration 0005): the runs stay readable under the renamed workflow;
-- crons, schedules not yet fired, filters and a declaration go. $1 = id, or NULL to pick the
-- workflow by its name $3.
WITH gone AS (
    UPDATE workflows
    SET name = name || '-' || gen_random_uuid(), deleted_at = now(), updated_at = now()
    WHERE tenant_id = $2 AND deleted_at IS NULL
      AND CASE WHEN $1::uuid IS NULL THEN name = $3::text ELSE id = $1::uuid END
    RETURNING id
), crons AS (
    DELETE FROM crons c USING gone WHERE c.workflow_id = gone.id
), pending AS (
    DELETE FROM scheduled_runs s USING gone
    WHERE s.workflow_id = gone.id AND s.status = 'SCHEDULED'
), filters AS (
    DELETE FROM event_filters f USING gone WHERE f.workflow_id = gone.id
), declared AS (
    DELETE FROM declared_workflows d USING gone WHERE d.workflow_id = gone.id
)
SELECT id FROM gone;

-- name: purge_deleted_workflows
-- Deleted workflows whose last run is gone (versions and the rest cascade).
DELETE FROM workflows w
WHERE w.id IN (
    SELECT id FROM workflows
    WHERE tenant_id = $1 AND deleted_at IS NOT NULL AND deleted_at < $2
      AND NOT EXISTS (SELECT 1 FROM workflow_runs r WHERE r.workflow_id = workflows.id)
    LIMIT $3
)
RETURNING id;

-- name: upsert_rate_limit
INSERT INTO rate_limits (tenant_id, key, limit_value, duration)
VALUES ($1, $2, $3, $4)
ON CONFLICT (tenant_id, key) DO UPDATE
SET limit_value = EXCLUDED.limit_value, duration = EXCLUDED.duration, updated_at = now()
RETURNING key;

-- name: delete_rate_limit
DELETE FROM rate_limits WHERE tenant_id = $1 AND key = $2 RETURNING key;

-- name: page_rate_limits
-- value: units used in the current window (none once the window has passed)
SELECT key, tenant_id, limit_value, duration,
       CASE WHEN now() - last_refill >= ('1 ' || duration)::interval THEN 0 ELSE value END
           AS value,
       last_refill, count(*) OVER () AS total
FROM rate_limits
WHERE tenant_id = $1 AND ($2::text IS NULL OR key ILIKE '%' || $2 || '%')
ORDER BY
    CASE WHEN $3 = 'limitValue' AND $4 = 'ASC' THEN limit_value END ASC,
    CASE WHEN $3 = 'limitValue' AND $4 = 'DESC' THEN limit_value END DESC,
    CASE WHEN $3 = 'key' AND $4 = 'DESC' THEN key END DESC,
    key ASC
OFFSET $5 LIMIT $6;

-- name: tenant_retention
SELECT id, coalesce(retention_hours, $1) AS hours FROM tenants;

-- name: delete_old_runs
-- One batch of final-state runs finished before the cutoff (the delete triggers take their
-- tasks, events and logs). Runs in day partitions from $4 on are spared: their whole day is
-- dropped at once (hewer_drop_day_partitions) instead; the DEFAULT partition is never spared.
DELETE FROM workflow_runs
WHERE id IN (
    SELECT id FROM workflow_runs
    WHERE tenant_id = $1 AND finished_at IS NOT NULL AND finished_at < $2
      AND ($4::uuid IS NULL OR id < $4 OR tableoid = 'workflow_runs_default'::regclass)
    LIMIT $3
)
RETURNING id;

-- name: ensure_partitions
SELECT hewer_ensure_partitions($1::date, $2::int, $3::interval) AS day;

-- name: partition_days
SELECT hewer_partition_days() AS day;

-- name: drop_day_partitions
SELECT runs, events
FROM hewer_drop_day_partitions($1::date, $2::uuid[], $3::timestamptz[], $4::interval);

-- name: delete_old_events
-- One batch of events stored before the cutoff; spared from $4 on like delete_old_runs
-- (their day's drop takes them, migration 0019).
DELETE FROM events
WHERE id IN (
    SELECT id FROM events
    WHERE tenant_id = $1 AND created_at < $2
      AND ($4::uuid IS NULL OR id < $4 OR tableoid = 'events_default'::regclass)
    LIMIT $3
)
RETURNING id;

-- name: delete_old_scheduled
DELETE FROM scheduled_runs
WHERE id IN (
    SELECT id FROM scheduled_runs
    WHERE tenant_id = $1 AND status <> 'SCHEDULED' AND updated_at < $2
    LIMIT $3
)
RETURNING id;

-- name: try_advisory_lock
SELECT pg_try_advisory_lock($1);

-- name: advisory_unlock
SELECT pg_advisory_unlock($1);

-- name: task_status_counts
SELECT t.status, count(*)::int AS n
FROM tasks t
JOIN workflow_runs r ON r.id = t.workflow_run_id
WHERE t.tenant_id = $1 AND t.created_at >= $2 AND ($3::timestamptz IS NULL OR t.created_at <= $3)
  AND ($4::uuid[] IS NULL OR r.workflow_id = ANY($4::uuid[]))
  AND ($5::uuid IS NULL OR r.parent_task_id = $5)
  AND ($6::uuid IS NULL OR r.triggering_event_id = $6)
GROUP BY t.status;

-- name: queue_depths
-- Queued items per tenant and action (set-aside items of paused workflows excluded).
SELECT tenant_id, action_id, count(*)::int AS n
FROM queue_items
WHERE NOT paused
GROUP BY tenant_id, action_id;

-- name: workflow_queue_metrics
SELECT w.name, t.status, count(*)::int AS n
FROM tasks t
JOIN workflow_runs r ON r.id = t.workflow_run_id
JOIN workflows w ON w.id = r.workflow_id
WHERE t.tenant_id = $1 AND t.status IN ('QUEUED', 'RUNNING')
GROUP BY w.name, t.status;

-- name: worker_slot_totals
-- Slots of live workers per tenant: total and in use.
SELECT w.tenant_id,
       coalesce(sum((SELECT sum(v::int) FROM jsonb_each_text(w.slot_config) AS s(k, v))), 0)::int
           AS total,
       -- a batch's members share one slot
       coalesce(sum((SELECT count(DISTINCT (coalesce(t.batch_id, t.id), t.assigned_at))
                     FROM tasks t WHERE t.worker_id = w.id AND t.slot_held)), 0)::int
           AS used
FROM workers w
WHERE w.is_active
GROUP BY w.tenant_id;

-- name: analyze_grown_tables
-- The engine's tables holding at least $1 rows and $2 times as many as their statistics
-- describe: analyzed now, their names returned (migration 0023).
SELECT hewer_analyze_grown_tables($1::bigint, $2::float8) AS name;
