-- Reads behind the REST API. Every statement filters on tenant_id ($1).
--
-- Listings come in two steps: a "page" statement applies the filters and returns
-- (total, ids[]) in one row, then a "full" statement loads the rows by id. The filters are
-- written once per resource that way, and the total survives an offset past the end.
--
-- Run metadata filters take parallel key and value arrays (a key may repeat: "k:a" OR "k:b");
-- values are compared as text so that a "key:1" filter matches a stored number 1 too. The
-- mode flag: true = any pair matches (OR), false = every pair must match (AND).

-- name: rest_page_runs
WITH matched AS (
    SELECT r.id, r.created_at
    FROM workflow_runs r
    WHERE r.tenant_id = $1
      AND r.created_at >= $2
      AND ($3::timestamptz IS NULL OR r.created_at <= $3::timestamptz)
      AND ($4::text[] IS NULL OR r.status = ANY($4::text[]))
      AND ($5::uuid[] IS NULL OR r.workflow_id = ANY($5::uuid[]))
      AND ($6::text[] IS NULL OR CASE WHEN $8::bool
            THEN EXISTS (SELECT 1 FROM unnest($6::text[], $7::text[]) kv(k, v)
                         WHERE r.additional_metadata ->> kv.k = kv.v)
            ELSE NOT EXISTS (SELECT 1 FROM unnest($6::text[], $7::text[]) kv(k, v)
                             WHERE (r.additional_metadata ->> kv.k) IS DISTINCT FROM kv.v)
          END)
      AND ($9::uuid IS NULL OR EXISTS (SELECT 1 FROM tasks w
                                       WHERE w.workflow_run_id = r.id AND w.worker_id = $9::uuid))
      AND ($10::uuid IS NULL OR r.parent_task_id = $10::uuid OR r.parent_run_id = $10::uuid)
      AND ($11::uuid IS NULL OR r.triggering_event_id = $11::uuid)
)
SELECT (SELECT count(*) FROM matched) AS total,
       ARRAY(SELECT id FROM matched ORDER BY created_at DESC, id DESC
             OFFSET $12 LIMIT $13) AS ids;

-- name: rest_page_tasks
WITH matched AS (
    SELECT t.id, t.created_at
    FROM tasks t
    JOIN workflow_runs r ON r.id = t.workflow_run_id
    WHERE t.tenant_id = $1
      AND t.created_at >= $2
      AND ($3::timestamptz IS NULL OR t.created_at <= $3::timestamptz)
      AND ($4::text[] IS NULL OR t.status = ANY($4::text[]))
      AND ($5::uuid[] IS NULL OR r.workflow_id = ANY($5::uuid[]))
      AND ($6::text[] IS NULL OR CASE WHEN $8::bool
            THEN EXISTS (SELECT 1 FROM unnest($6::text[], $7::text[]) kv(k, v)
                         WHERE r.additional_metadata ->> kv.k = kv.v)
            ELSE NOT EXISTS (SELECT 1 FROM unnest($6::text[], $7::text[]) kv(k, v)
                             WHERE (r.additional_metadata ->> kv.k) IS DISTINCT FROM kv.v)
          END)
      AND ($9::uuid IS NULL OR t.worker_id = $9::uuid)
      AND ($10::uuid IS NULL OR r.parent_task_id = $10::uuid OR r.parent_run_id = $10::uuid)
      AND ($11::uuid IS NULL OR r.triggering_event_id = $11::uuid)
)
SELECT (SELECT count(*) FROM matched) AS total,
       ARRAY(SELECT id FROM matched ORDER BY created_at DESC, id DESC
             OFFSET $12 LIMIT $13) AS ids;

-- name: rest_runs_full
-- task_steps counts the non-on-failure steps: more than one makes the run a DAG.
SELECT r.id, r.tenant_id, r.workflow_id, r.workflow_version_id, r.status, r.input,
       r.additional_metadata, r.parent_task_id, r.parent_run_id, r.triggering_event_id,
       r.created_at, r.started_at, r.finished_at,
       w.name AS workflow_name,
       (SELECT count(*) FROM steps s
        WHERE s.workflow_version_id = r.workflow_version_id AND s.kind = 'task') AS task_steps
FROM workflow_runs r
JOIN workflows w ON w.id = r.workflow_id
WHERE r.tenant_id = $1 AND r.id = ANY($2::uuid[]);

-- name: rest_tasks_full
-- Tasks by id ($2) or by run ($3), with what a task summary shows of its run and step.
SELECT t.id, t.tenant_id, t.workflow_run_id, t.step_id, t.readable_id, t.action_id, t.status,
       t.retry_count, t.output, t.error, t.is_skipped, t.worker_id,
       t.created_at, t.started_at, t.finished_at,
       s.is_durable, s.position,
       r.workflow_id, r.workflow_version_id, r.input, r.additional_metadata, r.parent_task_id,
       w.name AS workflow_name,
       (SELECT count(*) FROM steps s2
        WHERE s2.workflow_version_id = r.workflow_version_id AND s2.kind = 'task') AS task_steps,
       (SELECT count(*) FROM workflow_runs c
        WHERE c.parent_task_id = t.id AND c.tenant_id = t.tenant_id) AS num_children
FROM tasks t
JOIN workflow_runs r ON r.id = t.workflow_run_id
JOIN workflows w ON w.id = r.workflow_id
JOIN steps s ON s.id = t.step_id
WHERE t.tenant_id = $1 AND (t.id = ANY($2::uuid[]) OR t.workflow_run_id = ANY($3::uuid[]))
ORDER BY t.created_at, s.position;

-- name: rest_resolve_run
-- A run id, or the run of a task id: the SDK passes either.
SELECT id FROM workflow_runs WHERE tenant_id = $1 AND id = $2
UNION ALL
SELECT workflow_run_id FROM tasks WHERE tenant_id = $1 AND id = $2
LIMIT 1;

-- name: rest_run_task_events
SELECT e.id, e.task_id, e.retry_count, e.event_type, e.message, e.output, e.worker_id,
       e.created_at, t.readable_id, t.created_at AS task_created_at
FROM task_events e
JOIN tasks t ON t.id = e.task_id
WHERE e.tenant_id = $1 AND e.workflow_run_id = $2
ORDER BY e.id;

-- name: rest_version_steps
SELECT s.id, s.workflow_version_id, s.readable_id, s.action_id, s.kind, s.position,
       s.timeout_seconds, s.is_durable, s.slot_requests, s.parents
FROM steps s
WHERE s.tenant_id = $1 AND s.workflow_version_id = ANY($2::uuid[])
ORDER BY s.workflow_version_id, s.position;

-- name: rest_task_logs
-- $8 true = oldest first.
SELECT l.id, l.task_id, l.retry_count, l.level, l.message, l.metadata, l.created_at
FROM log_lines l
WHERE l.tenant_id = $1 AND l.task_id = $2
  AND ($3::timestamptz IS NULL OR l.created_at >= $3::timestamptz)
  AND ($4::timestamptz IS NULL OR l.created_at <= $4::timestamptz)
  AND ($5::text IS NULL OR strpos(lower(l.message), lower($5::text)) > 0)
  AND ($6::text[] IS NULL OR upper(l.level) = ANY($6::text[]))
  AND ($7::int IS NULL OR l.retry_count = $7::int)
ORDER BY CASE WHEN $8::bool THEN l.id ELSE -l.id END
LIMIT $9;

-- name: rest_page_workflows
-- An exact name match sorts first so that a name lookup with limit 1 finds it.
WITH matched AS (
    SELECT id, name, created_at
    FROM workflows
    WHERE tenant_id = $1 AND deleted_at IS NULL
      AND ($2::text IS NULL OR strpos(lower(name), lower($2::text)) > 0)
)
SELECT (SELECT count(*) FROM matched) AS total,
       ARRAY(SELECT id FROM matched
             ORDER BY (name = $2::text) DESC NULLS LAST, created_at DESC, id
             OFFSET $3 LIMIT $4) AS ids;

-- name: rest_workflows_full
SELECT id, tenant_id, name, description, is_paused, created_at, updated_at
FROM workflows
WHERE tenant_id = $1 AND id = ANY($2::uuid[]) AND deleted_at IS NULL;

-- name: rest_workflow_versions
-- Newest first; $3 picks one version by id.
SELECT v.id, v.workflow_id, v.ordinal, v.version, v.sticky, v.default_priority, v.created_at,
       v.definition
FROM workflow_versions v
WHERE v.tenant_id = $1 AND v.workflow_id = $2 AND ($3::uuid IS NULL OR v.id = $3::uuid)
ORDER BY v.ordinal DESC;

-- name: rest_version_event_keys
SELECT event_key FROM workflow_event_triggers
WHERE tenant_id = $1 AND workflow_version_id = $2
ORDER BY event_key;

-- name: rest_workers
-- db_now lets status be judged on the database clock, the one heartbeats are stamped with.
SELECT w.id, w.tenant_id, w.name, w.actions, w.slot_config, w.labels, w.runtime_info,
       w.is_active, w.is_paused, w.last_heartbeat_at, w.last_listener_established,
       w.created_at, now() AS db_now
FROM workers w
WHERE w.tenant_id = $1 AND ($2::uuid IS NULL OR w.id = $2::uuid)
ORDER BY w.created_at DESC, w.id;

-- name: rest_worker_used_slots
-- the members of a batch share one slot (as in worker_capacity)
SELECT t.worker_id, s.key AS slot_type, sum(s.value::int)::int AS used
FROM (
    SELECT DISTINCT ON (h.worker_id, coalesce(h.batch_id, h.id), h.assigned_at)
           h.worker_id, h.slot_requests
    FROM tasks h
    WHERE h.tenant_id = $1 AND h.slot_held AND h.worker_id = ANY($2::uuid[])
) t, jsonb_each_text(t.slot_requests) s
GROUP BY t.worker_id, s.key;

-- name: rest_page_events
WITH matched AS (
    SELECT e.id, e.created_at
    FROM events e
    WHERE e.tenant_id = $1
      AND ($2::timestamptz IS NULL OR e.created_at >= $2::timestamptz)
      AND ($3::timestamptz IS NULL OR e.created_at <= $3::timestamptz)
      AND ($4::text[] IS NULL OR e.key = ANY($4::text[]))
      AND ($5::uuid[] IS NULL OR e.id = ANY($5::uuid[]))
      AND ($6::text[] IS NULL OR e.scope = ANY($6::text[]))
      AND ($7::text IS NULL OR NOT EXISTS (
            SELECT 1 FROM jsonb_each_text($7::text::jsonb) kv
            WHERE (e.additional_metadata ->> kv.key) IS DISTINCT FROM kv.value))
      AND ($8::uuid[] IS NULL OR EXISTS (
            SELECT 1 FROM workflow_runs r
            WHERE r.tenant_id = $1 AND r.triggering_event_id = e.id
              AND r.workflow_id = ANY($8::uuid[])))
      AND ($9::text[] IS NULL OR EXISTS (
            SELECT 1 FROM workflow_runs r
            WHERE r.tenant_id = $1 AND r.triggering_event_id = e.id
              AND r.status = ANY($9::text[])))
)
SELECT (SELECT count(*) FROM matched) AS total,
       ARRAY(SELECT id FROM matched ORDER BY created_at DESC, id DESC
             OFFSET $10 LIMIT $11) AS ids;

-- name: rest_events_full
SELECT e.id, e.tenant_id, e.key, e.payload, e.additional_metadata, e.scope, e.created_at,
       e.triggering_webhook_name,
       coalesce(s.running, 0) AS running, coalesce(s.queued, 0) AS queued,
       coalesce(s.succeeded, 0) AS succeeded, coalesce(s.failed, 0) AS failed,
       coalesce(s.cancelled, 0) AS cancelled, coalesce(s.run_ids, '{}') AS run_ids
FROM events e
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE r.status = 'RUNNING')::int AS running,
           count(*) FILTER (WHERE r.status = 'QUEUED')::int AS queued,
           count(*) FILTER (WHERE r.status = 'COMPLETED')::int AS succeeded,
           count(*) FILTER (WHERE r.status = 'FAILED')::int AS failed,
           count(*) FILTER (WHERE r.status = 'CANCELLED')::int AS cancelled,
           array_agg(r.id ORDER BY r.created_at, r.id) AS run_ids
    FROM workflow_runs r
    WHERE r.tenant_id = e.tenant_id AND r.triggering_event_id = e.id
) s ON true
WHERE e.tenant_id = $1 AND e.id = ANY($2::uuid[]);
