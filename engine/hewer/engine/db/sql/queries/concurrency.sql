-- Concurrency admission (see migrations/0006_concurrency.sql and core/concurrency.py).

-- name: insert_concurrency_slots
INSERT INTO concurrency_slots
    (tenant_id, holder_id, holder_kind, run_id, retry_count, position, strategy_id, strategy,
     max_runs, key, priority, active, available_at, schedule_timeout_at, expression)
SELECT $1, s.holder_id, s.holder_kind, s.run_id, s.retry_count, s.position, s.strategy_id,
       s.strategy, s.max_runs, s.key, s.priority, s.position = 0,
       now() + make_interval(secs => s.delay_seconds),
       now() + make_interval(secs => s.delay_seconds + s.schedule_timeout_seconds),
       s.expression
FROM unnest($2::uuid[], $3::text[], $4::uuid[], $5::int[], $6::int[], $7::text[], $8::text[],
            $9::int[], $10::text[], $11::int[], $12::float8[], $13::int[], $14::text[])
     AS s(holder_id, holder_kind, run_id, retry_count, position, strategy_id, strategy,
          max_runs, key, priority, delay_seconds, schedule_timeout_seconds, expression);

-- name: mark_gated
-- The release triggers fire only for gated rows (tasks and runs without concurrency skip them).
WITH t AS (
    UPDATE tasks SET gated = true WHERE id = ANY($1::uuid[]) AND NOT gated
), r AS (
    UPDATE workflow_runs SET gated = true WHERE id = ANY($2::uuid[]) AND NOT gated
)
SELECT 1;

-- name: gate_runs
-- What the enqueuer needs of runs whose tasks have policies: the CEL variables, and whether
-- the run's own (workflow-level) concurrency slots exist and are all admitted.
SELECT r.id, r.input::text AS input, r.additional_metadata::text AS additional_metadata,
       count(s.id) AS slots, coalesce(bool_and(s.admitted), false) AS admitted
FROM workflow_runs r
LEFT JOIN concurrency_slots s ON s.holder_id = r.id AND s.holder_kind = 'run'
WHERE r.id = ANY($1::uuid[])
GROUP BY r.id;

-- name: lock_admission
-- One admission pass per tenant at a time, across replicas.
SELECT pg_advisory_xact_lock(hashtext('hewer.admission'), hashtext($1::text));

-- name: admission_candidates
-- Every slot of the groups that have a slot ready to be admitted: the admitted ones (they
-- count against max_runs, and CANCEL_IN_PROGRESS may displace them) and the ready ones.
WITH groups AS (
    SELECT DISTINCT strategy_id, key
    FROM concurrency_slots
    WHERE tenant_id = $1 AND active AND NOT admitted AND available_at <= now()
)
SELECT s.id, s.strategy_id, s.key, s.strategy, s.max_runs, s.priority, s.admitted,
       s.holder_id, s.holder_kind
FROM groups g
JOIN concurrency_slots s
  ON s.tenant_id = $1 AND s.strategy_id = g.strategy_id AND s.key = g.key
WHERE s.admitted OR (s.active AND s.available_at <= now());

-- name: admit_slots
-- Admit slots, activate the next slot of each chain, and return the holders whose whole
-- chain is now admitted.
WITH admitted AS (
    UPDATE concurrency_slots SET admitted = true
    WHERE id = ANY($1::bigint[]) AND NOT admitted
    RETURNING holder_id, holder_kind, run_id, position
), activated AS (
    UPDATE concurrency_slots n SET active = true
    FROM admitted a
    WHERE n.holder_id = a.holder_id AND n.position = a.position + 1
)
SELECT a.holder_id, a.holder_kind, a.run_id
FROM admitted a
WHERE NOT EXISTS (
    SELECT 1 FROM concurrency_slots n WHERE n.holder_id = a.holder_id AND n.position > a.position
);

-- name: admitted_task_entries
-- Admitted tasks that are still waiting for their queue item.
SELECT t.id, t.workflow_run_id, t.retry_count, t.step_id, t.priority, r.workflow_version_id,
       r.desired_worker_id, t.payload_extra::text AS payload_extra
FROM tasks t
JOIN workflow_runs r ON r.id = t.workflow_run_id
WHERE t.id = ANY($1::uuid[]) AND t.status = 'QUEUED'
  AND NOT EXISTS (SELECT 1 FROM queue_items q WHERE q.task_id = t.id);

-- name: waiting_tasks_of_runs
-- The queued tasks of runs whose workflow-level slots were just admitted (their roots, or
-- replayed tasks), which have neither a queue item nor slots of their own yet.
SELECT t.id, t.workflow_run_id, t.retry_count, t.step_id, t.priority, r.workflow_version_id,
       r.desired_worker_id, t.payload_extra::text AS payload_extra
FROM tasks t
JOIN workflow_runs r ON r.id = t.workflow_run_id
WHERE t.workflow_run_id = ANY($1::uuid[]) AND t.status = 'QUEUED'
  AND NOT EXISTS (SELECT 1 FROM queue_items q WHERE q.task_id = t.id)
  AND NOT EXISTS (SELECT 1 FROM concurrency_slots c WHERE c.holder_id = t.id);

-- name: tenants_waiting_admission
-- Tenants with a slot ready to be admitted: the safety net behind the wake-ups (a retry's
-- back-off ending, a notification lost while the listener reconnected).
SELECT DISTINCT tenant_id FROM concurrency_slots
WHERE active AND NOT admitted AND available_at <= now();

-- name: fail_unqueued_tasks
-- Tasks whose concurrency key could not be computed: failed before they were queued.
UPDATE tasks
SET status = 'FAILED', error = u.error, finished_at = now()
FROM unnest($1::uuid[], $2::text[]) AS u(id, error)
WHERE tasks.id = u.id AND tasks.status = 'QUEUED'
RETURNING tasks.id, tasks.tenant_id, tasks.workflow_run_id, tasks.step_id, tasks.worker_id,
          tasks.retry_count, tasks.action_id, tasks.readable_id, tasks.error;

-- name: concurrency_task_stats
-- Task-stats' concurrency groups: per task name and state, how many tasks each key holds
-- (a DAG's workflow-level slot counts for each of the run's active tasks).
WITH held AS (
    SELECT t.readable_id, t.status, s.strategy_id, s.expression, s.strategy, s.key
    FROM concurrency_slots s
    JOIN tasks t ON t.id = s.holder_id
    WHERE s.tenant_id = $1 AND s.holder_kind = 'task' AND t.status IN ('QUEUED', 'RUNNING')
    UNION ALL
    SELECT t.readable_id, t.status, s.strategy_id, s.expression, s.strategy, s.key
    FROM concurrency_slots s
    JOIN tasks t ON t.workflow_run_id = s.holder_id
    WHERE s.tenant_id = $1 AND s.holder_kind = 'run' AND t.status IN ('QUEUED', 'RUNNING')
)
SELECT readable_id, status, strategy_id, expression, strategy, key, count(*) AS n
FROM held
GROUP BY readable_id, status, strategy_id, expression, strategy, key
ORDER BY readable_id, status, strategy_id, key;

-- name: delete_concurrency_slots
DELETE FROM concurrency_slots WHERE id = ANY($1::bigint[]);

-- name: upsert_dynamic_rate_limits
-- Buckets named by dynamic limits: created, or their limit and window set, keeping usage.
INSERT INTO rate_limits (tenant_id, key, limit_value, duration)
SELECT $1, u.key, u.limit_value, u.duration
FROM unnest($2::text[], $3::int[], $4::text[]) AS u(key, limit_value, duration)
ON CONFLICT (tenant_id, key) DO UPDATE
SET limit_value = EXCLUDED.limit_value, duration = EXCLUDED.duration, updated_at = now()
WHERE rate_limits.limit_value <> EXCLUDED.limit_value
   OR rate_limits.duration <> EXCLUDED.duration;
