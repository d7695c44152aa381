-- Batch assignment (services/batches.py): configs, claiming groups, assigning a batch to one
-- slot, and what SendBatchActionEvent reads.

-- name: insert_step_batch_configs
INSERT INTO step_batch_configs
    (step_id, tenant_id, max_size, max_interval_ms, group_key, group_max_runs, broadcast_output)
SELECT b.step_id, $1, b.max_size, b.max_interval_ms, b.group_key, b.group_max_runs, b.broadcast
FROM unnest($2::uuid[], $3::int[], $4::int[], $5::text[], $6::int[], $7::bool[])
     AS b(step_id, max_size, max_interval_ms, group_key, group_max_runs, broadcast);

-- name: step_batch_configs_of_version
SELECT b.step_id, b.max_size, b.max_interval_ms, b.group_key, b.group_max_runs,
       b.broadcast_output
FROM step_batch_configs b
JOIN steps s ON s.id = b.step_id
WHERE s.workflow_version_id = $1;

-- name: batch_configs_of_actions
-- The config that applies to each action: its step in the latest version of its live
-- workflow (a later version without a batch config makes the action a plain one again).
SELECT action_id, max_size, max_interval_ms, group_key, group_max_runs, broadcast_output
FROM (
    SELECT DISTINCT ON (s.action_id) s.action_id, b.step_id AS batch_step, b.max_size,
           b.max_interval_ms, b.group_key, b.group_max_runs, b.broadcast_output
    FROM steps s
    JOIN workflow_versions v ON v.id = s.workflow_version_id
    JOIN workflows w ON w.id = v.workflow_id AND w.deleted_at IS NULL
    LEFT JOIN step_batch_configs b ON b.step_id = s.id
    WHERE s.tenant_id = $1 AND s.action_id = ANY($2::text[])
    ORDER BY s.action_id, v.ordinal DESC
) latest
WHERE batch_step IS NOT NULL;

-- name: batch_actions_with_items
-- Which of these batch actions have claimable items (one cheap look before any claim), and
-- whether some of them were never seen by a flusher (their key and size are not filled in).
SELECT a.action_id, EXISTS (
           SELECT 1 FROM queue_items q
           WHERE q.tenant_id = $1 AND q.action_id = a.action_id AND NOT q.paused
             AND q.available_at <= now() AND q.batch_bytes IS NULL
       ) AS has_fresh
FROM unnest($2::text[]) AS a(action_id)
WHERE EXISTS (
    SELECT 1 FROM queue_items q
    WHERE q.tenant_id = $1 AND q.action_id = a.action_id AND NOT q.paused
      AND q.available_at <= now()
);

-- name: fresh_batch_items
SELECT q.id, q.task_id
FROM queue_items q
WHERE q.tenant_id = $1 AND q.action_id = $2 AND NOT q.paused AND q.available_at <= now()
  AND q.batch_bytes IS NULL
ORDER BY q.id
LIMIT $3
FOR UPDATE SKIP LOCKED;

-- name: lock_batch_action
-- One flusher at a time per (tenant, action), across replicas: groups are formed from every
-- pending item, and the running-batch count that batch_group_max_runs checks cannot race.
SELECT pg_advisory_xact_lock(hashtextextended('hewer-batch:' || $1::text || ':' || $2::text, 0));

-- name: pending_batch_items
-- With what placement needs (as claim_queue_items reads it): the workflow's sticky strategy
-- and the desired labels (the run's trigger-time ones, else the step's). A batch is placed
-- like its first member.
SELECT q.id, q.task_id, q.retry_count, q.priority, q.slot_requests::text AS slot_requests,
       q.desired_worker_id, q.rate_limits::text AS rate_limits, q.batch_key, q.batch_bytes,
       extract(epoch FROM q.available_at)::float8 AS ready_at,
       extract(epoch FROM clock_timestamp())::float8 AS db_now, v.sticky,
       coalesce(r.desired_worker_labels, s.desired_worker_labels)::text AS desired_labels
FROM queue_items q
JOIN tasks t ON t.id = q.task_id
JOIN workflow_runs r ON r.id = t.workflow_run_id
JOIN workflow_versions v ON v.id = r.workflow_version_id
JOIN steps s ON s.id = t.step_id
WHERE q.tenant_id = $1 AND q.action_id = $2 AND NOT q.paused AND q.available_at <= now()
ORDER BY q.priority DESC, q.id
LIMIT $3
FOR UPDATE OF q SKIP LOCKED;

-- name: batch_item_contexts
-- What a group key is evaluated over, and the bytes an item adds to a START_BATCH message.
SELECT q.id, t.workflow_run_id, r.input::text AS input,
       r.additional_metadata::text AS additional_metadata,
       t.payload_extra::text AS payload_extra,
       octet_length(r.input::text) + octet_length(t.payload_extra::text) AS bytes
FROM queue_items q
JOIN tasks t ON t.id = q.task_id
JOIN workflow_runs r ON r.id = t.workflow_run_id
WHERE q.id = ANY($1::bigint[]);

-- name: prepare_batch_items
UPDATE queue_items q
SET batch_key = u.batch_key, batch_bytes = u.batch_bytes
FROM unnest($1::bigint[], $2::text[], $3::int[]) AS u(id, batch_key, batch_bytes)
WHERE q.id = u.id;

-- name: running_batches_per_key
SELECT batch_key, count(DISTINCT batch_id)::int AS running
FROM tasks
WHERE tenant_id = $1 AND action_id = $2 AND status = 'RUNNING' AND batch_id IS NOT NULL
  AND batch_key = ANY($3::text[])
GROUP BY batch_key;

-- name: assign_batch
-- The items of one batch go to one worker in one statement; they share its batch id (and so
-- one slot). Returns the members in the order given, with what their action payloads need.
WITH a AS (
    SELECT * FROM unnest($1::bigint[]) WITH ORDINALITY AS a(queue_id, position)
), deleted AS (
    DELETE FROM queue_items q USING a
    WHERE q.id = a.queue_id
    RETURNING q.task_id, q.retry_count, a.position
), updated AS (
    UPDATE tasks t
    SET status = 'RUNNING', worker_id = $2::uuid, slot_held = true, assigned_at = now(),
        started_at = NULL, timeout_at = now() + make_interval(secs => t.timeout_seconds),
        invocation_count = t.invocation_count + 1, batch_id = $3::uuid,
        batch_key = $4::text
    FROM deleted d
    WHERE t.id = d.task_id AND t.retry_count = d.retry_count AND t.status = 'QUEUED'
    RETURNING t.id, t.tenant_id, t.workflow_run_id, t.step_id, t.readable_id, t.action_id,
              t.retry_count, t.priority, t.payload_extra, t.worker_id, t.invocation_count,
              t.queued_at, d.position
), runs AS (
    UPDATE workflow_runs r
    SET status = 'RUNNING', started_at = coalesce(r.started_at, now())
    FROM updated u
    WHERE r.id = u.workflow_run_id AND r.status = 'QUEUED'
), events AS (
    INSERT INTO task_events (tenant_id, task_id, workflow_run_id, retry_count, event_type,
                             worker_id, message)
    SELECT u.tenant_id, u.id, u.workflow_run_id, u.retry_count, 'ASSIGNED', u.worker_id,
           'in batch ' || $3::uuid::text
    FROM updated u
)
SELECT u.id, u.workflow_run_id, u.step_id, u.readable_id, u.action_id, u.retry_count,
       u.priority, u.payload_extra::text AS payload_extra, u.worker_id, u.invocation_count,
       r.input::text AS input, r.additional_metadata::text AS additional_metadata,
       r.workflow_id, r.workflow_version_id, u.queued_at, r.created_at AS run_created_at
FROM updated u
JOIN workflow_runs r ON r.id = u.workflow_run_id
ORDER BY u.position;

-- name: batch_member_attempts
-- The attempts a SendBatchActionEvent names, as the engine knows them.
SELECT id, retry_count, status, worker_id, batch_id
FROM tasks
WHERE tenant_id = $1 AND id = ANY($2::uuid[]);

-- name: fail_queued_task
-- A queued task that cannot run (its batch group key does not evaluate): failed for good.
WITH target AS (
    SELECT id FROM tasks
    WHERE id = $2 AND tenant_id = $1 AND status = 'QUEUED'
    FOR UPDATE
), dequeued AS (
    DELETE FROM queue_items q USING target WHERE q.task_id = target.id
)
UPDATE tasks t
SET status = 'FAILED', error = $3, finished_at = now(), slot_held = false
FROM target
WHERE t.id = target.id
RETURNING t.id, t.tenant_id, t.workflow_run_id, t.step_id, t.worker_id, t.retry_count,
          t.action_id, t.readable_id;
