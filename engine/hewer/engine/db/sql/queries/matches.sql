-- DAG condition matches (migration 0012, services/matches.py).

-- name: insert_task_matches
INSERT INTO task_matches (id, tenant_id, task_id)
SELECT m.id, $1, m.task_id
FROM unnest($2::uuid[], $3::uuid[]) AS m(id, task_id);

-- name: insert_task_match_conditions
INSERT INTO task_match_conditions
    (match_id, tenant_id, action, or_group_id, kind, readable_data_key, expression,
     event_key, event_scope, sleep_until)
SELECT c.match_id, $1, c.action, c.or_group_id, c.kind, c.readable_data_key, c.expression,
       c.event_key, c.event_scope,
       CASE WHEN c.kind = 'SLEEP' THEN now() + make_interval(secs => c.sleep_seconds) END
FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::float8[])
     AS c(match_id, action, or_group_id, kind, readable_data_key, expression, event_key,
          event_scope, sleep_seconds);

-- name: due_sleep_matches
-- Matches with a sleep that is due; SKIP LOCKED: another replica firing one takes it.
SELECT m.id
FROM task_matches m
WHERE m.id IN (
    SELECT match_id FROM task_match_conditions
    WHERE kind = 'SLEEP' AND satisfied_at IS NULL AND sleep_until <= now()
    ORDER BY sleep_until
    LIMIT $1
)
ORDER BY m.id
FOR UPDATE SKIP LOCKED;

-- name: event_key_matches
-- Matches waiting for this event key, locked (in id order, so replicas do not deadlock):
-- a second replica delivering an event at once waits here and then sees the fired match gone.
SELECT m.id
FROM task_matches m
WHERE m.id IN (
    SELECT match_id FROM task_match_conditions
    WHERE tenant_id = $1 AND kind = 'USER_EVENT' AND satisfied_at IS NULL AND event_key = $2
)
ORDER BY m.id
FOR UPDATE;

-- name: recent_events
-- Events of one key (and scope, when given) stored since a time, newest first: the
-- look-back of a user-event condition (a DAG task's or a durable wait's).
SELECT payload::text AS payload
FROM events
WHERE tenant_id = $1 AND key = $2 AND created_at >= $3
  AND ($4::text IS NULL OR scope = $4)
ORDER BY created_at DESC
LIMIT 100;

-- name: match_conditions
SELECT c.id, c.match_id, c.action, c.or_group_id, c.kind, c.expression, c.event_key,
       c.event_scope, c.sleep_until, c.satisfied_at IS NOT NULL AS satisfied,
       coalesce(c.sleep_until <= now(), false) AS due,
       c.readable_data_key, c.sleep_for, c.child_run_id, c.data::text AS data,
       m.task_id, m.tenant_id, m.durable_branch_id, m.durable_node_id
FROM task_match_conditions c
JOIN task_matches m ON m.id = c.match_id
WHERE c.match_id = ANY($1::uuid[])
ORDER BY c.id;

-- name: satisfy_match_conditions
UPDATE task_match_conditions c
SET satisfied_at = now(), data = d.data::jsonb
FROM unnest($1::bigint[], $2::text[]) AS d(id, data)
WHERE c.id = d.id AND c.satisfied_at IS NULL;

-- name: delete_task_matches
DELETE FROM task_matches WHERE id = ANY($1::uuid[]);

-- name: next_sleep_deadline
SELECT min(sleep_until) FROM task_match_conditions WHERE kind = 'SLEEP' AND satisfied_at IS NULL;

-- name: queue_waiting_task
-- WAITING -> QUEUED ($2 = 'WAITING', $3 = 'QUEUED', names from core.task_state).
UPDATE tasks t
SET status = $3, queued_at = now()
FROM workflow_runs r
WHERE t.id = $1 AND t.status = $2 AND r.id = t.workflow_run_id
RETURNING t.id, t.tenant_id, t.workflow_run_id, t.step_id, t.retry_count, t.priority,
          t.payload_extra, r.workflow_version_id, r.desired_worker_id;

-- name: skip_waiting_task
-- WAITING -> COMPLETED, skipped ($2 = 'WAITING', $3 = 'COMPLETED').
UPDATE tasks t
SET status = $3, is_skipped = true, output = $4, finished_at = now()
WHERE t.id = $1 AND t.status = $2
RETURNING t.id, t.tenant_id, t.workflow_run_id, t.step_id, t.worker_id, t.retry_count,
          t.action_id, t.readable_id, $2::text AS previous_status, t.invocation_count,
          false AS is_durable;
