-- Operator actions: cancel, replay, pause.

-- name: active_tasks_for_ids
-- Ids may name tasks or whole runs.
SELECT id
FROM tasks
WHERE tenant_id = $1
  AND (id = ANY($2::uuid[]) OR workflow_run_id = ANY($2::uuid[]))
  AND status IN ('QUEUED', 'WAITING', 'RUNNING', 'EVICTED')
ORDER BY created_at;

-- name: replay_targets
-- For each id: the runs it names (a run id, or the run of a task id) and the task, if any.
SELECT DISTINCT r.id AS run_id, r.workflow_version_id, t.id AS task_id
FROM workflow_runs r
LEFT JOIN tasks t ON t.id = ANY($2::uuid[]) AND t.workflow_run_id = r.id
WHERE r.tenant_id = $1
  AND (r.id = ANY($2::uuid[]) OR t.id IS NOT NULL);

-- name: reset_task
UPDATE tasks
SET status = 'QUEUED', retry_count = retry_count + 1, output = NULL, error = NULL,
    is_skipped = false, worker_id = NULL, slot_held = false, timeout_at = NULL,
    assigned_at = NULL, started_at = NULL, finished_at = NULL, queued_at = now()
WHERE id = $1 AND status IN ('COMPLETED', 'FAILED', 'CANCELLED', 'EVICTED')
RETURNING id, tenant_id, workflow_run_id, step_id, retry_count, action_id, priority,
          slot_requests::text AS slot_requests, worker_id;

-- name: delete_tasks
DELETE FROM tasks WHERE id = ANY($1::uuid[]);

-- name: set_worker_paused
UPDATE workers SET is_paused = $3 WHERE id = $1 AND tenant_id = $2 RETURNING id;
