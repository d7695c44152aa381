-- name: requeue_lost_item
-- A lost attempt (worker died, or dispatch undeliverable) goes back under the queue position
-- its previous attempt had (tasks.queue_order, recorded by assign_tasks); a fresh one if
-- there is none or it is taken. Paused workflows set the item aside as insert_queue_items
-- does, with the same FOR KEY SHARE lock on the workflow row.
INSERT INTO queue_items
    (id, tenant_id, task_id, retry_count, action_id, priority, slot_requests, desired_worker_id,
     available_at, schedule_timeout_at, paused, pause_expires_at, rate_limits)
OVERRIDING SYSTEM VALUE
SELECT coalesce(
           CASE WHEN NOT EXISTS (SELECT 1 FROM queue_items x WHERE x.id = t.queue_order)
                THEN t.queue_order END,
           nextval('queue_items_id_seq')),
       $1, t.id, $3, $4, $5, $6::text::jsonb, $7, now(), now() + make_interval(secs => $8),
       coalesce(w.is_paused, false),
       CASE WHEN w.is_paused THEN now() + make_interval(secs => w.paused_queue_ttl_seconds) END,
       $9::text::jsonb
FROM tasks t
LEFT JOIN LATERAL (
    SELECT wf.is_paused, wf.paused_queue_ttl_seconds
    FROM workflow_runs r
    JOIN workflows wf ON wf.id = r.workflow_id
    WHERE r.id = t.workflow_run_id
    FOR KEY SHARE OF wf
) w ON true
WHERE t.id = $2
RETURNING id;
