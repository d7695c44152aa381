-- Deadlines: execution timeouts, schedule timeouts, dead workers.

-- name: expired_tasks
SELECT id, tenant_id, retry_count, timeout_seconds
FROM tasks
WHERE status = 'RUNNING' AND timeout_at < now()
ORDER BY timeout_at
LIMIT $1;

-- name: schedule_timed_out
-- Queued too long: in the queue, or waiting for a concurrency slot (a run's slot holds back
-- the run's queued tasks).
(SELECT task_id, tenant_id FROM queue_items WHERE schedule_timeout_at < now() LIMIT $1)
UNION
(SELECT t.id AS task_id, t.tenant_id
 FROM concurrency_slots s
 JOIN tasks t ON t.id = s.holder_id
              OR (s.holder_kind = 'run' AND t.workflow_run_id = s.holder_id
                  AND t.status = 'QUEUED')
 WHERE NOT s.admitted AND s.schedule_timeout_at < now()
 LIMIT $1);

-- name: tasks_of_dead_workers
SELECT t.id, t.tenant_id, t.retry_count, t.worker_id
FROM tasks t
JOIN workers w ON w.id = t.worker_id
WHERE t.status = 'RUNNING'
  AND coalesce(w.last_heartbeat_at, w.created_at) < now() - make_interval(secs => $1)
LIMIT $2;

-- name: deactivate_dead_workers
-- SKIP LOCKED: a row locked now is being written by a heartbeat flush or a listener, so the
-- worker is not dead; the sweep never queues behind them (and they never behind the sweep).
UPDATE workers SET is_active = false
WHERE id IN (
    SELECT id FROM workers
    WHERE is_active
      AND coalesce(last_heartbeat_at, created_at) < now() - make_interval(secs => $1)
    FOR NO KEY UPDATE SKIP LOCKED
);

-- name: next_deadline
SELECT least(
    (SELECT min(timeout_at) FROM tasks WHERE status = 'RUNNING'),
    (SELECT min(schedule_timeout_at) FROM queue_items),
    (SELECT min(schedule_timeout_at) FROM concurrency_slots WHERE NOT admitted)
);

-- name: refresh_timeout
UPDATE tasks
SET timeout_at = timeout_at + make_interval(secs => $3)
WHERE id = $1 AND tenant_id = $2 AND status = 'RUNNING'
RETURNING timeout_at;
