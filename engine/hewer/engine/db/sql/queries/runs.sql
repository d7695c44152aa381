-- Runs, tasks and the queue: triggering, claiming, finishing.

-- name: insert_runs
INSERT INTO workflow_runs
    (id, tenant_id, workflow_id, workflow_version_id, status, input, additional_metadata,
     priority, parent_task_id, parent_run_id, child_index, child_key, dedupe_key,
     desired_worker_id, triggering_event_id, triggering_event_key, desired_worker_labels)
SELECT r.id, $1, r.workflow_id, r.version_id, 'QUEUED', r.input::jsonb, r.metadata::jsonb,
       r.priority, r.parent_task_id, r.parent_run_id, r.child_index, r.child_key, r.dedupe_key,
       r.desired_worker_id, r.event_id, r.event_key, r.labels::jsonb
FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::int[], $8::uuid[],
            $9::uuid[], $10::int[], $11::text[], $12::text[], $13::uuid[], $14::uuid[],
            $15::text[], $16::text[])
     AS r(id, workflow_id, version_id, input, metadata, priority, parent_task_id, parent_run_id,
          child_index, child_key, dedupe_key, desired_worker_id, event_id, event_key, labels)
-- a child spawned twice has the same id (core/ids.py child_run_id): the second is skipped
ON CONFLICT (id) DO NOTHING
RETURNING id;

-- name: spawned_dedupe_keys
-- Which of these (deterministic) child run ids exist already, with their dedupe keys.
SELECT id, dedupe_key FROM workflow_runs WHERE tenant_id = $1 AND id = ANY($2::uuid[]);

-- name: insert_tasks
INSERT INTO tasks
    (id, tenant_id, workflow_run_id, step_id, readable_id, action_id, status, priority,
     payload_extra, slot_requests, timeout_seconds, is_skipped, output, queued_at, finished_at)
SELECT t.id, $1, t.run_id, t.step_id, t.readable_id, t.action_id, t.status, t.priority,
       t.payload_extra::jsonb, t.slot_requests::jsonb, t.timeout_seconds, t.is_skipped,
       t.output,
       CASE WHEN t.status = 'QUEUED' THEN now() END,
       CASE WHEN t.status IN ('COMPLETED', 'FAILED', 'CANCELLED') THEN now() END
FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[], $8::int[],
            $9::text[], $10::text[], $11::int[], $12::bool[], $13::text[])
     AS t(id, run_id, step_id, readable_id, action_id, status, priority, payload_extra,
          slot_requests, timeout_seconds, is_skipped, output);

-- name: insert_queue_items
-- Items of a paused workflow are set aside (paused) until it is unpaused or their TTL ends.
-- The workflow row is read FOR KEY SHARE, as in create_runs: a retry or a DAG child queued
-- while a pause commits either waits for the pause and sees it, or makes the pause wait and
-- is then set aside by it; without the lock it could slip past both.
INSERT INTO queue_items
    (tenant_id, task_id, retry_count, action_id, priority, slot_requests, desired_worker_id,
     available_at, schedule_timeout_at, paused, pause_expires_at, rate_limits)
SELECT $1, q.task_id, q.retry_count, q.action_id, q.priority, q.slot_requests::jsonb,
       q.desired_worker_id,
       now() + make_interval(secs => q.delay_seconds),
       now() + make_interval(secs => q.delay_seconds + q.schedule_timeout_seconds),
       coalesce(w.is_paused, false),
       CASE WHEN w.is_paused THEN now() + make_interval(secs => w.paused_queue_ttl_seconds) END,
       q.rate_limits::jsonb
FROM unnest($2::uuid[], $3::int[], $4::text[], $5::int[], $6::text[], $7::uuid[], $8::float8[],
            $9::int[], $10::text[])
     AS q(task_id, retry_count, action_id, priority, slot_requests, desired_worker_id,
          delay_seconds, schedule_timeout_seconds, rate_limits)
LEFT JOIN LATERAL (
    SELECT wf.is_paused, wf.paused_queue_ttl_seconds
    FROM tasks t
    JOIN workflow_runs r ON r.id = t.workflow_run_id
    JOIN workflows wf ON wf.id = r.workflow_id
    WHERE t.id = q.task_id
    FOR KEY SHARE OF wf
) w ON true;

-- name: create_tasks
-- New tasks of existing runs in ONE statement (one round trip), as create_runs does for new
-- runs: the tasks, the queue items services/enqueue.py made for them (an empty list when
-- they wait or are gated) and each task's first event (nothing checks the items' and
-- events' task ids against tasks: migration 0016). The paused flag comes from the item's
-- workflow ($23), read FOR KEY SHARE as in create_runs and insert_queue_items.
WITH wf AS (
    SELECT id, is_paused, paused_queue_ttl_seconds
    FROM workflows
    WHERE id = ANY($23::uuid[])
    FOR KEY SHARE
), new_tasks AS (
    INSERT INTO tasks
        (id, tenant_id, workflow_run_id, step_id, readable_id, action_id, status, priority,
         payload_extra, slot_requests, timeout_seconds, is_skipped, output, queued_at,
         finished_at)
    SELECT t.id, $1, t.run_id, t.step_id, t.readable_id, t.action_id, t.status, t.priority,
           t.payload_extra::jsonb, t.slot_requests::jsonb, t.timeout_seconds, t.is_skipped,
           t.output,
           CASE WHEN t.status = 'QUEUED' THEN now() END,
           CASE WHEN t.status IN ('COMPLETED', 'FAILED', 'CANCELLED') THEN now() END
    FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[],
                $8::int[], $9::text[], $10::text[], $11::int[], $12::bool[], $13::text[])
         AS t(id, run_id, step_id, readable_id, action_id, status, priority, payload_extra,
              slot_requests, timeout_seconds, is_skipped, output)
    RETURNING id
), new_items AS (
    INSERT INTO queue_items
        (tenant_id, task_id, retry_count, action_id, priority, slot_requests, desired_worker_id,
         available_at, schedule_timeout_at, paused, pause_expires_at, rate_limits)
    SELECT $1, q.task_id, q.retry_count, q.action_id, q.priority, q.slot_requests::jsonb,
           q.desired_worker_id,
           now() + make_interval(secs => q.delay_seconds),
           now() + make_interval(secs => q.delay_seconds + q.schedule_timeout_seconds),
           coalesce(wf.is_paused, false),
           CASE WHEN wf.is_paused
                THEN now() + make_interval(secs => wf.paused_queue_ttl_seconds) END,
           q.rate_limits::jsonb
    FROM unnest($14::uuid[], $15::int[], $16::text[], $17::int[], $18::text[], $19::uuid[],
                $20::float8[], $21::int[], $22::text[], $23::uuid[])
         AS q(task_id, retry_count, action_id, priority, slot_requests, desired_worker_id,
              delay_seconds, schedule_timeout_seconds, rate_limits, workflow_id)
    LEFT JOIN wf ON wf.id = q.workflow_id
    RETURNING id
), new_events AS (
    INSERT INTO task_events
        (tenant_id, task_id, workflow_run_id, retry_count, event_type, message, output,
         worker_id)
    SELECT $1, e.task_id, e.run_id, e.retry_count, e.event_type, e.message, e.output,
           e.worker_id
    FROM unnest($24::uuid[], $25::uuid[], $26::int[], $27::text[], $28::text[], $29::text[],
                $30::uuid[])
         AS e(task_id, run_id, retry_count, event_type, message, output, worker_id)
    RETURNING id
)
SELECT (SELECT count(*) FROM new_tasks) AS tasks,
       (SELECT count(*) FROM new_items) AS items,
       (SELECT count(*) FROM new_events) AS events;

-- name: insert_task_events
INSERT INTO task_events
    (tenant_id, task_id, workflow_run_id, retry_count, event_type, message, output, worker_id)
SELECT $1, e.task_id, e.run_id, e.retry_count, e.event_type, e.message, e.output, e.worker_id
FROM unnest($2::uuid[], $3::uuid[], $4::int[], $5::text[], $6::text[], $7::text[], $8::uuid[])
     AS e(task_id, run_id, retry_count, event_type, message, output, worker_id);

-- name: notify
SELECT pg_notify($1, $2);

-- name: claim_queue_items
-- Up to a.lim ready items per action, skipping rows another replica is claiming and the ids
-- in $5 (claimed by an earlier pass of this round). An item pinned to a worker that is not
-- among this replica's ($4) is left to the replica holding that worker: always when the
-- workflow is HARD sticky (it waits for its worker), and for the first $6 seconds when the
-- pin is a soft preference and the worker is alive (then anyone may take it). The item's
-- sticky strategy and desired labels (the run's trigger-time ones, else the step's) are
-- read through its task. $7, unless null, restricts the claim to those tasks' items (a DAG
-- hop assigning the children it just queued, services/scheduler.py assign_within).
SELECT q.id, q.task_id, q.action_id, q.priority, q.slot_requests::text AS slot_requests,
       q.desired_worker_id, q.rate_limits::text AS rate_limits, v.sticky,
       coalesce(r.desired_worker_labels, s.desired_worker_labels)::text AS desired_labels
FROM unnest($2::text[], $3::int[]) AS a(action_id, lim)
CROSS JOIN LATERAL (
    SELECT qi.id, qi.task_id, qi.action_id, qi.priority, qi.slot_requests,
           qi.desired_worker_id, qi.rate_limits
    FROM queue_items qi
    WHERE qi.tenant_id = $1 AND qi.action_id = a.action_id AND qi.available_at <= now()
      AND NOT qi.paused
      AND qi.id <> ALL($5::bigint[])
      AND ($7::uuid[] IS NULL OR qi.task_id = ANY($7::uuid[]))
      AND (qi.desired_worker_id IS NULL OR qi.desired_worker_id = ANY($4::uuid[])
           OR NOT EXISTS (
               SELECT 1
               FROM tasks pt
               JOIN workflow_runs pr ON pr.id = pt.workflow_run_id
               JOIN workflow_versions pv ON pv.id = pr.workflow_version_id
               LEFT JOIN workers pw ON pw.id = qi.desired_worker_id
               WHERE pt.id = qi.task_id
                 AND (pv.sticky = 'HARD'
                      OR (pw.is_active AND NOT pw.is_paused
                          AND qi.available_at > now() - make_interval(secs => $6))))
      )
    ORDER BY qi.priority DESC, qi.id
    LIMIT a.lim
    FOR UPDATE OF qi SKIP LOCKED
) AS q
JOIN tasks t ON t.id = q.task_id
JOIN workflow_runs r ON r.id = t.workflow_run_id
JOIN workflow_versions v ON v.id = r.workflow_version_id
JOIN steps s ON s.id = t.step_id;

-- name: assign_tasks
WITH a AS (
    SELECT * FROM unnest($1::bigint[], $2::uuid[]) AS a(queue_id, worker_id)
), deleted AS (
    DELETE FROM queue_items q USING a
    WHERE q.id = a.queue_id
    RETURNING q.id AS queue_id, q.task_id, q.retry_count, a.worker_id
), updated AS (
    UPDATE tasks t
    SET status = 'RUNNING', worker_id = d.worker_id, slot_held = true, assigned_at = now(),
        started_at = NULL, timeout_at = now() + make_interval(secs => t.timeout_seconds),
        invocation_count = t.invocation_count + 1,
        queue_order = d.queue_id  -- kept for a lost attempt's re-queue (recovery.sql)
    FROM deleted d
    WHERE t.id = d.task_id AND t.retry_count = d.retry_count AND t.status = 'QUEUED'
    RETURNING t.id, t.tenant_id, t.workflow_run_id, t.step_id, t.readable_id, t.action_id,
              t.retry_count, t.priority, t.payload_extra, t.worker_id, t.invocation_count,
              t.queued_at
), runs AS (
    UPDATE workflow_runs r
    SET status = 'RUNNING', started_at = coalesce(r.started_at, now())
    FROM updated u
    WHERE r.id = u.workflow_run_id AND r.status = 'QUEUED'
), events AS (
    INSERT INTO task_events (tenant_id, task_id, workflow_run_id, retry_count, event_type,
                             worker_id)
    SELECT u.tenant_id, u.id, u.workflow_run_id, u.retry_count, 'ASSIGNED', u.worker_id
    FROM updated u
)
SELECT u.id, u.workflow_run_id, u.step_id, u.readable_id, u.action_id, u.retry_count,
       u.priority, u.payload_extra::text AS payload_extra, u.worker_id, u.invocation_count,
       r.input::text AS input, r.additional_metadata::text AS additional_metadata,
       r.child_index, r.child_key, r.parent_task_id, r.workflow_id, r.workflow_version_id,
       r.triggering_event_id, r.triggering_event_key, s.is_durable, u.queued_at,
       r.created_at AS run_created_at
FROM updated u
JOIN workflow_runs r ON r.id = u.workflow_run_id
JOIN steps s ON s.id = u.step_id;

-- name: get_task
SELECT t.id, t.tenant_id, t.workflow_run_id, t.step_id, t.readable_id, t.action_id, t.status,
       t.retry_count, t.app_retry_count, t.worker_id, t.timeout_at, t.timeout_seconds,
       r.workflow_version_id, t.invocation_count,
       (SELECT is_durable FROM steps s WHERE s.id = t.step_id) AS is_durable
FROM tasks t
JOIN workflow_runs r ON r.id = t.workflow_run_id
WHERE t.id = $1 AND t.tenant_id = $2;

-- name: finish_task
-- Applies only to the attempt that is running: late results of older attempts change nothing.
UPDATE tasks
SET status = $3, output = $4, error = $5, finished_at = now(), slot_held = false
WHERE id = $1 AND retry_count = $2 AND status = 'RUNNING'
RETURNING id, tenant_id, workflow_run_id, step_id, worker_id, retry_count, action_id,
          readable_id, invocation_count,
          (SELECT is_durable FROM steps s WHERE s.id = step_id) AS is_durable;

-- name: requeue_task
-- A failed attempt that will be retried: back to QUEUED under the next retry count.
UPDATE tasks
SET status = 'QUEUED', retry_count = retry_count + 1,
    app_retry_count = app_retry_count + CASE WHEN $3 THEN 1 ELSE 0 END,
    error = $4, worker_id = NULL, slot_held = false, timeout_at = NULL,
    assigned_at = NULL, started_at = NULL, queued_at = now()
WHERE id = $1 AND retry_count = $2 AND status = 'RUNNING'
RETURNING id, tenant_id, workflow_run_id, step_id, worker_id, retry_count, action_id, priority,
          readable_id, slot_requests::text AS slot_requests;

-- name: lock_task_queue_item
SELECT id FROM queue_items WHERE task_id = $1 FOR UPDATE;

-- name: cancel_task
WITH target AS (
    SELECT id, status AS previous_status, worker_id AS previous_worker_id
    FROM tasks
    WHERE id = $2 AND tenant_id = $1 AND status IN ('QUEUED', 'WAITING', 'RUNNING', 'EVICTED')
    FOR UPDATE
), dequeued AS (
    DELETE FROM queue_items q USING target WHERE q.task_id = target.id
), unmatched AS (
    -- a WAITING task's pending DAG conditions (task_matches, migration 0012); a durable
    -- task's waits stay: they keep their deadline for a replay (migration 0013)
    DELETE FROM task_matches m
    USING target WHERE m.task_id = target.id AND m.durable_node_id IS NULL
)
UPDATE tasks t
SET status = 'CANCELLED', finished_at = now(), slot_held = false
FROM target
WHERE t.id = target.id
RETURNING t.id, t.tenant_id, t.workflow_run_id, t.step_id, t.worker_id, t.retry_count,
          t.action_id, t.readable_id, target.previous_status, t.invocation_count,
          (SELECT is_durable FROM steps s WHERE s.id = t.step_id) AS is_durable;

-- name: run_priority
SELECT priority, desired_worker_id, workflow_version_id FROM workflow_runs WHERE id = $1;

-- name: parent_context
SELECT t.id, t.workflow_run_id, r.additional_metadata
FROM tasks t
JOIN workflow_runs r ON r.id = t.workflow_run_id
WHERE t.id = $2 AND t.tenant_id = $1;

-- name: finished_runs
SELECT id, status FROM workflow_runs WHERE id = ANY($1::uuid[]) AND finished_at IS NOT NULL;

-- name: run_results
SELECT workflow_run_id, tenant_id, id, readable_id, status, output, error, is_skipped
FROM tasks
WHERE workflow_run_id = ANY($1::uuid[]);

-- name: get_run
SELECT id, tenant_id, workflow_id, workflow_version_id, status, input::text AS input,
       additional_metadata::text AS additional_metadata, finished_at, created_at
FROM workflow_runs
WHERE id = $1 AND tenant_id = $2;

-- name: run_tasks_detail
SELECT id, readable_id, status, output, error, is_skipped, retry_count
FROM tasks
WHERE workflow_run_id = $1
ORDER BY created_at;

-- name: task_run_id
SELECT workflow_run_id FROM tasks WHERE id = $1 AND tenant_id = $2;

-- name: release_slot
UPDATE tasks SET slot_held = false
WHERE id = $1 AND tenant_id = $2 AND slot_held
RETURNING worker_id;

-- name: insert_log_line
INSERT INTO log_lines (tenant_id, task_id, retry_count, level, message, metadata, created_at)
SELECT $1, t.id, coalesce($3, t.retry_count), $4, $5, $6, $7
FROM tasks t
WHERE t.id = $2 AND t.tenant_id = $1
RETURNING id;

-- name: complete_tasks
-- Many completions at once. Only attempts that are running, in the reporter's tenant and (when
-- the reporter names itself) held by that worker change; the caller diagnoses the rest.
WITH reported AS (
    SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::uuid[], $5::uuid[])
        AS i(task_id, retry_count, output, tenant_id, reporter)
), done AS (
    -- a completion proves a start: the SDK sends STARTED and COMPLETED concurrently, and a
    -- start report that arrives after this one finds the attempt no longer running
    UPDATE tasks t
    SET status = 'COMPLETED', output = i.output, finished_at = now(), slot_held = false,
        started_at = coalesce(t.started_at, now())
    FROM reported i
    WHERE t.id = i.task_id AND t.retry_count = i.retry_count AND t.status = 'RUNNING'
      AND t.tenant_id = i.tenant_id AND (i.reporter IS NULL OR t.worker_id = i.reporter)
    RETURNING t.id, t.tenant_id, t.workflow_run_id, t.step_id, t.worker_id, t.retry_count,
              t.action_id, t.readable_id
), events AS (
    INSERT INTO task_events
        (tenant_id, task_id, workflow_run_id, retry_count, event_type, worker_id)
    SELECT tenant_id, id, workflow_run_id, retry_count, 'COMPLETED', worker_id FROM done
), single_runs AS (
    -- a single-task run shares its id with its task and finishes with it, in this statement
    -- (a DAG's run status is decided by the caller from all of its tasks)
    UPDATE workflow_runs r
    SET status = 'COMPLETED', started_at = coalesce(r.started_at, now()), finished_at = now()
    FROM done d
    WHERE r.id = d.id AND d.workflow_run_id = d.id
), dag_runs AS (
    -- the DAG runs to progress, locked here as lock_runs would (in id order) to save its
    -- round trip; the caller reads them and their tasks in its next statement (run_states),
    -- whose snapshot is taken after these locks are held (a read in this statement could
    -- predate a sibling's commit that this lock waited for)
    SELECT l.id
    FROM workflow_runs l
    WHERE l.id = ANY(ARRAY(SELECT workflow_run_id FROM done WHERE workflow_run_id <> id))
    ORDER BY l.id
    FOR UPDATE OF l
)
-- run_finished: the single-task run finished here (single_runs always matches it);
-- workflow_name and duration_ms feed the workflow-duration histogram. Nothing joins the
-- CTEs above by id: their row estimates are guesses, and a nested loop over a CTE scan was
-- quadratic in the batch (250,000 join-filter rows for 500 completions).
SELECT d.*, r.workflow_version_id, d.workflow_run_id = d.id AS run_finished,
       w.name AS workflow_name, 'COMPLETED' AS status,
       CASE WHEN d.workflow_run_id = d.id
            THEN extract(epoch FROM now() - coalesce(r.started_at, now()))::float8 * 1000
       END AS duration_ms,
       (SELECT count(*) FROM dag_runs) AS dag_runs_locked
FROM done d
JOIN workflow_runs r ON r.id = d.workflow_run_id
LEFT JOIN workflows w ON w.id = r.workflow_id AND d.workflow_run_id = d.id;

-- name: start_tasks
-- Many STARTED reports at once; the SDK sends two per attempt, the second changes nothing.
-- Returns every reported task of the reporter's tenant (unknown ids are absent), with
-- `first` true where this call recorded the start.
WITH reported AS (
    SELECT * FROM unnest($1::uuid[], $2::int[], $3::uuid[]) AS i(task_id, retry_count, tenant_id)
), known AS (
    SELECT DISTINCT ON (t.id) t.id, t.tenant_id, t.workflow_run_id, t.retry_count, t.worker_id,
           (t.status = 'RUNNING' AND t.retry_count = i.retry_count AND t.started_at IS NULL)
               AS startable
    FROM tasks t
    JOIN reported i ON t.id = i.task_id AND t.tenant_id = i.tenant_id
    ORDER BY t.id
), updated AS (
    UPDATE tasks t SET started_at = now()
    FROM known k
    WHERE t.id = k.id AND k.startable AND t.started_at IS NULL
    RETURNING t.id
), events AS (
    INSERT INTO task_events
        (tenant_id, task_id, workflow_run_id, retry_count, event_type, worker_id)
    SELECT k.tenant_id, k.id, k.workflow_run_id, k.retry_count, 'STARTED', k.worker_id
    FROM known k
    JOIN updated u ON u.id = k.id
)
SELECT k.id, k.tenant_id, k.workflow_run_id, k.retry_count, u.id IS NOT NULL AS first
FROM known k
LEFT JOIN updated u ON u.id = k.id;

-- name: create_runs
-- New runs without dedupe keys in ONE statement (one round trip): the runs, their first
-- tasks, queue items and QUEUED events, then the scheduler wake-up. Foreign keys are checked
-- at the end of the statement, so children may reference rows inserted beside them. The
-- workflow rows are locked FOR KEY SHARE first: a concurrent pause (FOR UPDATE) is waited
-- for, and a locking read returns the row as that pause committed it, so the queue items
-- carry the right paused flag.
-- The callers may name a workflow's version from a cache (services/triggers.py): nothing is
-- written, and `current` comes back false, unless every run names its workflow's latest
-- version and no workflow is deleted; the caller then looks the versions up and retries.
WITH wf AS (
    SELECT w.id, w.is_paused, w.paused_queue_ttl_seconds, w.deleted_at IS NULL AS live,
           w.latest_version_id
    FROM workflows w
    WHERE w.id = ANY($2::uuid[])
    FOR KEY SHARE OF w
), guard AS (
    SELECT NOT EXISTS (
        SELECT 1
        FROM (SELECT DISTINCT * FROM unnest($2::uuid[], $4::uuid[])) AS r(workflow_id, version_id)
        LEFT JOIN wf ON wf.id = r.workflow_id
        WHERE wf.id IS NULL OR NOT wf.live OR wf.latest_version_id IS DISTINCT FROM r.version_id
    ) AS current
), new_runs AS (
    INSERT INTO workflow_runs
        (id, tenant_id, workflow_id, workflow_version_id, status, input, additional_metadata,
         priority, desired_worker_id, triggering_event_id, triggering_event_key,
         desired_worker_labels)
    SELECT r.id, $1, r.workflow_id, r.version_id, 'QUEUED', r.input::jsonb, r.metadata::jsonb,
           r.priority, r.desired_worker_id, r.event_id, r.event_key, r.labels::jsonb
    FROM unnest($3::uuid[], $2::uuid[], $4::uuid[], $5::text[], $6::text[], $7::int[],
                $8::uuid[], $9::uuid[], $10::text[], $25::text[])
         AS r(id, workflow_id, version_id, input, metadata, priority, desired_worker_id,
              event_id, event_key, labels)
    WHERE (SELECT current FROM guard)
    RETURNING id
), new_tasks AS (
    INSERT INTO tasks
        (id, tenant_id, workflow_run_id, step_id, readable_id, action_id, status, priority,
         payload_extra, slot_requests, timeout_seconds, queued_at)
    SELECT t.id, $1, t.run_id, t.step_id, t.readable_id, t.action_id, 'QUEUED', t.priority,
           t.payload_extra::jsonb, t.slot_requests::jsonb, t.timeout_seconds, now()
    FROM unnest($11::uuid[], $12::uuid[], $13::uuid[], $14::text[], $15::text[], $16::int[],
                $17::text[], $18::text[], $19::int[])
         AS t(id, run_id, step_id, readable_id, action_id, priority, payload_extra,
              slot_requests, timeout_seconds)
    WHERE (SELECT current FROM guard)
    RETURNING id
), new_items AS (
    INSERT INTO queue_items
        (tenant_id, task_id, retry_count, action_id, priority, slot_requests, desired_worker_id,
         available_at, schedule_timeout_at, paused, pause_expires_at)
    SELECT $1, q.task_id, 0, q.action_id, q.priority, q.slot_requests::jsonb,
           q.desired_worker_id, now(), now() + make_interval(secs => q.schedule_timeout_seconds),
           coalesce(wf.is_paused, false),
           CASE WHEN wf.is_paused THEN now() + make_interval(secs => wf.paused_queue_ttl_seconds)
           END
    FROM unnest($11::uuid[], $15::text[], $16::int[], $18::text[], $20::uuid[], $21::int[],
                $22::uuid[])
         AS q(task_id, action_id, priority, slot_requests, desired_worker_id,
              schedule_timeout_seconds, workflow_id)
    LEFT JOIN wf ON wf.id = q.workflow_id
    WHERE (SELECT current FROM guard)
    RETURNING id
), new_events AS (
    INSERT INTO task_events (tenant_id, task_id, workflow_run_id, retry_count, event_type)
    SELECT $1, e.task_id, e.run_id, 0, 'QUEUED'
    FROM unnest($11::uuid[], $12::uuid[]) AS e(task_id, run_id)
    WHERE (SELECT current FROM guard)
    RETURNING id
)
SELECT (SELECT count(*) FROM new_runs) AS runs,
       (SELECT count(*) FROM new_items) AS items,
       (SELECT count(*) FROM new_events) AS events,
       (SELECT count(*) FROM new_tasks) AS tasks,
       (SELECT current FROM guard) AS current,
       (SELECT pg_notify($23, $24) FROM guard WHERE current) AS notified;

-- name: lock_runs
-- In id order, so that two transactions locking overlapping sets cannot deadlock.
SELECT id, tenant_id, workflow_version_id, priority, desired_worker_id, status AS run_status,
       finished_at IS NOT NULL AS run_was_finished
FROM workflow_runs
WHERE id = ANY($1::uuid[])
ORDER BY id
FOR UPDATE;

-- name: run_states
-- Runs the caller holds locked (complete_tasks' dag_runs) with their tasks, one row a task.
SELECT t.workflow_run_id, t.id, t.step_id, t.readable_id, t.status, t.output, t.error,
       t.is_skipped, t.worker_id, r.tenant_id, r.workflow_version_id, r.priority,
       r.desired_worker_id, r.status AS run_status, r.finished_at IS NOT NULL AS run_was_finished
FROM workflow_runs r
JOIN tasks t ON t.workflow_run_id = r.id
WHERE r.id = ANY($1::uuid[]);

-- name: run_task_snapshots
SELECT workflow_run_id, id, step_id, readable_id, status, output, error, is_skipped, worker_id
FROM tasks
WHERE workflow_run_id = ANY($1::uuid[]);

-- name: set_runs_status
-- Returns the runs that finished, with what the workflow-duration histogram observes (a run
-- that ends before it started, e.g. cancelled while queued, counts with a zero duration).
WITH changed AS (
    UPDATE workflow_runs r
    SET status = u.status,
        started_at = CASE WHEN u.status <> 'QUEUED' THEN coalesce(r.started_at, now())
                          ELSE r.started_at END,
        finished_at = CASE WHEN u.finished THEN now() ELSE NULL END
    FROM unnest($1::uuid[], $2::text[], $3::bool[]) AS u(id, status, finished)
    WHERE r.id = u.id
      -- a DAG's run is "progressed" after every task; most of those change nothing, and
      -- skipping them saves a row version per task
      AND (r.status <> u.status OR u.finished OR r.finished_at IS NOT NULL)
    RETURNING r.tenant_id, r.workflow_id, r.status, r.started_at, r.finished_at
)
SELECT c.tenant_id, w.name AS workflow_name, c.status,
       extract(epoch FROM c.finished_at - c.started_at)::float8 * 1000 AS duration_ms
FROM changed c
JOIN workflows w ON w.id = c.workflow_id
WHERE c.finished_at IS NOT NULL;

-- name: worker_capacity
-- This replica's workers ($2) that serve one of the actions $3 (with $4: one that has a ready
-- item): whether they may take work, and the slot units their tasks hold. A function
-- (migrations 0017, 0022) so that its plan is made once per session.
SELECT id, is_paused, engine_id, labels, alive, used
FROM hewer_worker_capacity($1::uuid, $2::uuid[], $3::text[], $4::boolean, $5::float8);
