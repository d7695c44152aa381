-- Reads behind the web dashboard (services/dashboard.py) that the REST API has no
-- statement for. Every statement filters on the tenant ($1), so a page can never show
-- another tenant's rows by guessing an id.

-- name: dash_tenants
-- $1: tenant ids, or NULL for every tenant (HEWER_DASHBOARD_AUTH=none).
SELECT id, name FROM tenants
WHERE $1::uuid[] IS NULL OR id = ANY($1::uuid[])
ORDER BY name;

-- name: dash_workflow_names
SELECT id, name FROM workflows
WHERE tenant_id = $1 AND deleted_at IS NULL
ORDER BY name;

-- name: dash_runs_page
-- One page of runs, newest first, with the total of the whole listing; the filters are
-- those of rest_page_runs (metadata pairs must all match). One statement and no per-row
-- subquery, so a page of 1,000 runs stays cheap.
WITH matched AS (
    SELECT r.id, r.created_at
    FROM workflow_runs r
    WHERE r.tenant_id = $1
      AND r.created_at >= $2
      AND ($3::timestamptz IS NULL OR r.created_at <= $3::timestamptz)
      AND ($4::text[] IS NULL OR r.status = ANY($4::text[]))
      AND ($5::uuid[] IS NULL OR r.workflow_id = ANY($5::uuid[]))
      AND ($6::text[] IS NULL OR NOT EXISTS (
            SELECT 1 FROM unnest($6::text[], $7::text[]) kv(k, v)
            WHERE (r.additional_metadata ->> kv.k) IS DISTINCT FROM kv.v))
), page AS (
    SELECT id FROM matched ORDER BY created_at DESC, id DESC OFFSET $8 LIMIT $9
)
SELECT r.id, r.status, r.created_at, r.started_at, r.finished_at, w.name AS workflow_name,
       (SELECT count(*) FROM matched) AS total
FROM page p
JOIN workflow_runs r ON r.id = p.id
JOIN workflows w ON w.id = r.workflow_id
ORDER BY r.created_at DESC, r.id DESC;

-- name: dash_runs_total
-- The total alone, for a page past the end (dash_runs_page then has no row to carry it).
SELECT count(*) FROM workflow_runs r
WHERE r.tenant_id = $1 AND r.created_at >= $2
  AND ($3::timestamptz IS NULL OR r.created_at <= $3::timestamptz)
  AND ($4::text[] IS NULL OR r.status = ANY($4::text[]))
  AND ($5::uuid[] IS NULL OR r.workflow_id = ANY($5::uuid[]))
  AND ($6::text[] IS NULL OR NOT EXISTS (
        SELECT 1 FROM unnest($6::text[], $7::text[]) kv(k, v)
        WHERE (r.additional_metadata ->> kv.k) IS DISTINCT FROM kv.v));

-- name: dash_run_attempts
-- Per task and attempt: when it was queued (first event of the attempt), assigned, started
-- and ended, and how it ended; the run's timeline is drawn from these.
SELECT e.task_id, t.readable_id, e.retry_count,
       min(e.created_at) AS first_at,
       min(e.created_at) FILTER (WHERE e.event_type = 'ASSIGNED') AS assigned_at,
       min(e.created_at) FILTER (WHERE e.event_type = 'STARTED') AS started_at,
       max(e.created_at) FILTER (WHERE e.event_type IN
           ('COMPLETED', 'FAILED', 'CANCELLED', 'TIMED_OUT', 'SKIPPED', 'REASSIGNED'))
           AS ended_at,
       (array_agg(e.event_type ORDER BY e.id DESC) FILTER (WHERE e.event_type IN
           ('COMPLETED', 'FAILED', 'CANCELLED', 'TIMED_OUT', 'SKIPPED', 'REASSIGNED')))[1]
           AS outcome,
       (array_agg(e.worker_id ORDER BY e.id DESC) FILTER (WHERE e.worker_id IS NOT NULL))[1]
           AS worker_id
FROM task_events e
JOIN tasks t ON t.id = e.task_id
WHERE e.tenant_id = $1 AND e.workflow_run_id = $2
GROUP BY e.task_id, t.readable_id, e.retry_count
ORDER BY min(e.created_at), t.readable_id, e.retry_count;

-- name: dash_run_logs
-- The run's log lines, oldest first, at most $3.
SELECT l.task_id, t.readable_id, l.retry_count, l.level, l.message, l.created_at
FROM log_lines l
JOIN tasks t ON t.id = l.task_id
WHERE l.tenant_id = $1 AND t.workflow_run_id = $2
ORDER BY l.id
LIMIT $3;

-- name: dash_child_runs
SELECT r.id, r.status, r.created_at, w.name AS workflow_name
FROM workflow_runs r
JOIN workflows w ON w.id = r.workflow_id
WHERE r.tenant_id = $1 AND r.parent_run_id = $2
ORDER BY r.created_at
LIMIT 200;

-- name: dash_workflows
-- Each workflow with its newest version's definition, version count, event triggers, crons
-- and runs of the last 24 hours by status.
SELECT w.id, w.name, w.description, w.is_paused, w.created_at, w.updated_at,
       v.id AS version_id, v.ordinal, v.version, v.definition, v.sticky, v.default_priority,
       v.created_at AS version_created_at,
       (SELECT count(*) FROM workflow_versions v2 WHERE v2.workflow_id = w.id) AS versions,
       ARRAY(SELECT e.event_key FROM workflow_event_triggers e
             WHERE e.workflow_version_id = v.id ORDER BY e.event_key) AS event_keys,
       ARRAY(SELECT c.expression FROM crons c
             WHERE c.workflow_id = w.id AND c.enabled ORDER BY c.created_at) AS crons,
       (SELECT count(*) FROM workflow_runs r
        WHERE r.tenant_id = w.tenant_id AND r.workflow_id = w.id
          AND r.created_at >= now() - interval '24 hours') AS runs_24h
FROM workflows w
LEFT JOIN workflow_versions v ON v.id = w.latest_version_id
WHERE w.tenant_id = $1 AND w.deleted_at IS NULL AND ($2::uuid IS NULL OR w.id = $2::uuid)
ORDER BY w.name;

-- name: dash_workflow_versions
SELECT v.id, v.ordinal, v.version, v.checksum, v.created_at
FROM workflow_versions v
WHERE v.tenant_id = $1 AND v.workflow_id = $2
ORDER BY v.ordinal DESC
LIMIT 50;

-- name: dash_queue_history
-- Queued and running tasks at each minute of the last hour (the last point is now), drawn
-- from the tasks' own timestamps: no sampler to run, and every replica sees the same
-- history. A retried task counts from its latest queueing.
WITH at AS (
    SELECT generate_series(now() - interval '59 minutes', now(), interval '1 minute') AS t
), recent AS (
    SELECT coalesce(t.queued_at, t.created_at) AS queued_at,
           CASE WHEN t.assigned_at >= coalesce(t.queued_at, t.created_at)
                THEN t.assigned_at END AS assigned_at,
           t.finished_at
    FROM tasks t
    WHERE t.tenant_id = $1 AND t.created_at >= now() - interval '1 hour'
      AND t.status <> 'WAITING'
    UNION ALL
    -- older tasks still queued or running, found through their own indexes
    SELECT coalesce(t.queued_at, t.created_at), NULL, NULL
    FROM queue_items q JOIN tasks t ON t.id = q.task_id
    WHERE q.tenant_id = $1 AND t.created_at < now() - interval '1 hour'
    UNION ALL
    SELECT coalesce(t.queued_at, t.created_at), coalesce(t.assigned_at, t.created_at), NULL
    FROM tasks t
    WHERE t.status = 'RUNNING' AND t.tenant_id = $1
      AND t.created_at < now() - interval '1 hour'
)
SELECT at.t AS at,
       count(r.queued_at) FILTER (
           WHERE r.queued_at <= at.t AND (r.assigned_at IS NULL OR r.assigned_at > at.t)
             AND (r.finished_at IS NULL OR r.finished_at > at.t))::int AS queued,
       count(r.queued_at) FILTER (
           WHERE r.assigned_at <= at.t
             AND (r.finished_at IS NULL OR r.finished_at > at.t))::int AS running
FROM at LEFT JOIN recent r ON true
GROUP BY at.t
ORDER BY at.t;

-- name: dash_oldest_queued
SELECT min(coalesce(t.queued_at, t.created_at)) AS oldest, now() AS now
FROM queue_items q JOIN tasks t ON t.id = q.task_id
WHERE q.tenant_id = $1;

-- name: dash_crons
SELECT c.id, c.name, c.expression, c.enabled, c.origin, c.next_fire_at, c.last_fired_at,
       c.input, c.additional_metadata, c.created_at, w.name AS workflow_name
FROM crons c
JOIN workflows w ON w.id = c.workflow_id
WHERE c.tenant_id = $1 AND w.deleted_at IS NULL
ORDER BY w.name, c.created_at
LIMIT 500;

-- name: dash_scheduled
SELECT s.id, s.trigger_at, s.status, s.origin, s.workflow_run_id, s.input,
       s.additional_metadata, s.created_at, w.name AS workflow_name, r.status AS run_status
FROM scheduled_runs s
JOIN workflows w ON w.id = s.workflow_id
LEFT JOIN workflow_runs r ON r.id = s.workflow_run_id
WHERE s.tenant_id = $1 AND w.deleted_at IS NULL
ORDER BY (s.status = 'SCHEDULED') DESC, s.trigger_at DESC
LIMIT 500;

-- name: dash_events
SELECT e.id, e.key, e.payload, e.additional_metadata, e.scope, e.created_at,
       e.triggering_webhook_name,
       (SELECT count(*) FROM workflow_runs r
        WHERE r.tenant_id = e.tenant_id AND r.triggering_event_id = e.id) AS runs
FROM events e
WHERE e.tenant_id = $1
ORDER BY e.created_at DESC, e.id DESC
LIMIT $2;

-- name: dash_filters
SELECT f.id, f.scope, f.expression, f.payload, f.is_declarative, f.created_at,
       w.name AS workflow_name
FROM event_filters f
JOIN workflows w ON w.id = f.workflow_id
WHERE f.tenant_id = $1
ORDER BY w.name, f.created_at
LIMIT 500;

-- name: dash_put_pool_report
-- The latest report of a pool, and a history point when something changed, a decision came
-- with it ($14), or the last point is a minute old; then a week's history is kept.
WITH report AS (
    INSERT INTO worker_pool_reports AS p
        (tenant_id, pool, workflows, autoscaling, min_replicas, max_replicas,
         desired_replicas, current_replicas, ready_replicas, queued, running, busy_workers,
         reason, reported_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, now())
    ON CONFLICT (tenant_id, pool) DO UPDATE SET
        workflows = EXCLUDED.workflows, autoscaling = EXCLUDED.autoscaling,
        min_replicas = EXCLUDED.min_replicas, max_replicas = EXCLUDED.max_replicas,
        desired_replicas = EXCLUDED.desired_replicas,
        current_replicas = EXCLUDED.current_replicas,
        ready_replicas = EXCLUDED.ready_replicas, queued = EXCLUDED.queued,
        running = EXCLUDED.running, busy_workers = EXCLUDED.busy_workers,
        reason = EXCLUDED.reason, reported_at = now()
    RETURNING p.pool
), last AS (
    SELECT h.at, h.desired_replicas, h.current_replicas FROM worker_pool_history h
    WHERE h.tenant_id = $1 AND h.pool = $2
    ORDER BY h.at DESC LIMIT 1
), point AS (
    INSERT INTO worker_pool_history
        (tenant_id, pool, desired_replicas, current_replicas, queued, running, decision, reason)
    SELECT $1, $2, $7, $8, $10, $11, $14, CASE WHEN $14::text IS NULL THEN NULL ELSE $13 END
    WHERE $14::text IS NOT NULL
       OR NOT EXISTS (SELECT 1 FROM last)
       OR EXISTS (SELECT 1 FROM last
                  WHERE last.desired_replicas <> $7 OR last.current_replicas <> $8
                     OR last.at < now() - interval '1 minute')
    RETURNING id
), pruned AS (
    DELETE FROM worker_pool_history
    WHERE tenant_id = $1 AND pool = $2 AND at < now() - interval '7 days'
)
SELECT (SELECT count(*) FROM report) AS reports, (SELECT count(*) FROM point) AS points;

-- name: dash_delete_pool_report
WITH gone AS (
    DELETE FROM worker_pool_reports WHERE tenant_id = $1 AND pool = $2 RETURNING pool
), history AS (
    DELETE FROM worker_pool_history WHERE tenant_id = $1 AND pool = $2
)
SELECT count(*) FROM gone;

-- name: dash_pool_reports
SELECT p.*, now() AS now FROM worker_pool_reports p
WHERE p.tenant_id = $1
ORDER BY p.pool;

-- name: dash_pool_history
-- The last $2 hours of every pool's points, oldest first.
SELECT h.pool, h.at, h.desired_replicas, h.current_replicas, h.queued, h.running,
       h.decision, h.reason
FROM worker_pool_history h
WHERE h.tenant_id = $1 AND h.at >= now() - make_interval(hours => $2)
ORDER BY h.pool, h.at;
