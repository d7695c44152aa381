-- Reads behind task-stats and the WorkerPool autoscaler (services/autoscaling.py).
-- "Queued" means runnable: a queue item that is not set aside (paused workflow) and whose
-- available_at has come (rate-limited items wait for their bucket's refill). Tasks held
-- back by a concurrency key have no queue item, so they are not counted either: they could
-- not use another worker.

-- name: runnable_queued_by_task
-- Runnable queue items per task name (readable id) and action, with the oldest.
SELECT t.readable_id, q.action_id, count(*)::int AS n,
       min(coalesce(t.queued_at, t.created_at)) AS oldest
FROM queue_items q
JOIN tasks t ON t.id = q.task_id
WHERE q.tenant_id = $1 AND NOT q.paused AND q.available_at <= now()
GROUP BY t.readable_id, q.action_id;

-- name: running_by_task
-- Running tasks per task name, with the oldest start.
SELECT t.readable_id, count(*)::int AS n,
       min(coalesce(t.started_at, t.assigned_at)) AS oldest
FROM tasks t
WHERE t.tenant_id = $1 AND t.status = 'RUNNING'
GROUP BY t.readable_id;

-- name: pool_work
-- Runnable queued and running tasks of the named workflows, and the oldest queued.
WITH wf AS (
    SELECT id FROM workflows
    WHERE tenant_id = $1 AND name = ANY($2::text[]) AND deleted_at IS NULL
), queued AS (
    SELECT count(*)::int AS n, min(coalesce(t.queued_at, t.created_at)) AS oldest
    FROM queue_items q
    JOIN tasks t ON t.id = q.task_id
    JOIN workflow_runs r ON r.id = t.workflow_run_id
    WHERE q.tenant_id = $1 AND NOT q.paused AND q.available_at <= now()
      AND r.workflow_id IN (SELECT id FROM wf)
), running AS (
    SELECT count(*)::int AS n
    FROM tasks t
    JOIN workflow_runs r ON r.id = t.workflow_run_id
    WHERE t.tenant_id = $1 AND t.status = 'RUNNING' AND r.workflow_id IN (SELECT id FROM wf)
)
SELECT queued.n AS queued, queued.oldest AS oldest_queued, running.n AS running,
       now() AS now,
       ARRAY(SELECT w.name FROM workflows w
             WHERE w.tenant_id = $1 AND w.name = ANY($2::text[]) AND w.deleted_at IS NULL)
           AS known_workflows
FROM queued, running;

-- name: pool_workers
-- Live workers carrying the pool's label, with what they run now.
SELECT w.id, w.name, w.is_paused, w.labels ->> 'hewer.dev/pod' AS pod,
       (SELECT count(*) FROM tasks t WHERE t.worker_id = w.id AND t.slot_held)::int AS running
FROM workers w
WHERE w.tenant_id = $1 AND w.is_active AND w.labels ->> 'hewer.dev/worker-pool' = $2
ORDER BY w.created_at;
