-- The durable event log (migration 0013, services/durable.py).

-- name: lock_durable_task
-- The task a durable request names, locked: log writes, eviction, restore and completion
-- of one task are serialized on its row.
SELECT t.id, t.tenant_id, t.status, t.invocation_count, t.worker_id, t.workflow_run_id,
       t.retry_count, t.step_id, t.priority, t.payload_extra, r.desired_worker_id,
       s.is_durable, r.workflow_version_id
FROM tasks t
JOIN steps s ON s.id = t.step_id
JOIN workflow_runs r ON r.id = t.workflow_run_id
WHERE t.id = $1 AND t.tenant_id = $2
FOR UPDATE OF t;

-- name: take_durable_nodes
-- Reserve $4 node ids for invocation $3; a newer invocation restarts the count at 1.
-- Returns the last id reserved and the branch new entries go to.
INSERT INTO durable_logs AS l (task_id, tenant_id, invocation_count, last_node_id)
VALUES ($1, $2, $3, $4)
ON CONFLICT (task_id) DO UPDATE
SET last_node_id = CASE WHEN l.invocation_count = EXCLUDED.invocation_count
                        THEN l.last_node_id + $4 ELSE $4 END,
    invocation_count = EXCLUDED.invocation_count
RETURNING last_node_id, branch_id;

-- name: durable_branches
SELECT branch_id, parent_branch_id, first_node_id FROM durable_branches WHERE task_id = $1;

-- name: durable_entries_at
SELECT e.branch_id, e.node_id, e.kind, e.idempotency_key, e.child_run_id,
       e.satisfied_at IS NOT NULL AS satisfied, e.result, e.is_failure, e.error_message,
       EXISTS (SELECT 1 FROM task_matches m
               WHERE m.task_id = e.task_id AND m.durable_branch_id = e.branch_id
                 AND m.durable_node_id = e.node_id) AS has_match
FROM durable_entries e
JOIN unnest($2::int[], $3::int[]) AS k(branch_id, node_id)
  ON e.branch_id = k.branch_id AND e.node_id = k.node_id
WHERE e.task_id = $1;

-- name: insert_durable_entries
INSERT INTO durable_entries
    (task_id, tenant_id, branch_id, node_id, kind, idempotency_key, label, child_run_id)
SELECT $1, $2, e.branch_id, e.node_id, e.kind, e.idempotency_key, e.label, e.child_run_id
FROM unnest($3::int[], $4::int[], $5::text[], $6::bytea[], $7::text[], $8::uuid[])
     AS e(branch_id, node_id, kind, idempotency_key, label, child_run_id);

-- name: satisfy_durable_entry
-- Callers hold the task's row lock (lock_durable_task), which serialises the order counter.
UPDATE durable_entries
SET satisfied_at = now(), result = $4, is_failure = $5, error_message = $6,
    satisfied_order = (SELECT coalesce(max(satisfied_order), 0) + 1
                       FROM durable_entries WHERE task_id = $1)
WHERE task_id = $1 AND branch_id = $2 AND node_id = $3 AND satisfied_at IS NULL
RETURNING node_id;

-- name: insert_durable_match
INSERT INTO task_matches (id, tenant_id, task_id, durable_branch_id, durable_node_id)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT DO NOTHING
RETURNING id;

-- name: insert_durable_match_conditions
INSERT INTO task_match_conditions
    (match_id, tenant_id, action, or_group_id, kind, readable_data_key, expression,
     event_key, event_scope, sleep_until, sleep_for, child_run_id)
SELECT $1, $2, 'CREATE', c.or_group_id, c.kind, c.readable_data_key, c.expression,
       c.event_key, c.event_scope,
       CASE WHEN c.kind = 'SLEEP' THEN now() + make_interval(secs => c.sleep_seconds) END,
       c.sleep_for, c.child_run_id
FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
            $9::float8[], $10::text[], $11::uuid[])
     AS c(or_group_id, kind, readable_data_key, expression, event_key, event_scope,
          sleep_seconds, sleep_for, child_run_id);

-- name: child_run_tasks
SELECT r.id AS run_id, r.status AS run_status, r.finished_at IS NOT NULL AS finished,
       t.readable_id, t.status, t.output, t.error
FROM workflow_runs r
LEFT JOIN tasks t ON t.workflow_run_id = r.id
WHERE r.id = ANY($1::uuid[]);

-- name: ready_child_matches
-- Durable matches whose CHILD condition was satisfied (by the trigger of migration 0013)
-- and that have not fired yet; locked like the other match producers.
SELECT m.id
FROM task_matches m
WHERE m.id IN (
    SELECT match_id FROM task_match_conditions
    WHERE kind = 'CHILD' AND satisfied_at IS NOT NULL
)
ORDER BY m.id
LIMIT $1
FOR UPDATE SKIP LOCKED;

-- name: evict_durable_task
-- RUNNING -> EVICTED ($3 = 'RUNNING', $4 = 'EVICTED'): the invocation stops waiting on its
-- worker; its slot and execution deadline go with it.
UPDATE tasks
SET status = $4, slot_held = false, worker_id = NULL, timeout_at = NULL
WHERE id = $1 AND invocation_count = $2 AND status = $3
RETURNING id, tenant_id, workflow_run_id, retry_count, $5::uuid AS worker_id;

-- name: restore_evicted_task
-- EVICTED -> QUEUED ($2 = 'EVICTED', $3 = 'QUEUED'); the next assignment is a new invocation.
UPDATE tasks t
SET status = $3, queued_at = now()
FROM workflow_runs r
WHERE t.id = $1 AND t.status = $2 AND r.id = t.workflow_run_id
RETURNING t.id, t.tenant_id, t.workflow_run_id, t.step_id, t.retry_count, t.priority,
          t.payload_extra, r.workflow_version_id, r.desired_worker_id;

-- name: create_durable_branch
-- A new branch from (parent branch, node): the latest branch id + 1, which new entries go to.
WITH log AS (
    INSERT INTO durable_logs AS l (task_id, tenant_id, invocation_count, last_node_id)
    VALUES ($1, $2, 0, 0)
    ON CONFLICT (task_id) DO UPDATE SET task_id = l.task_id
    RETURNING l.task_id
), latest AS (
    SELECT greatest(1, coalesce(max(branch_id), 1)) + 1 AS branch_id
    FROM durable_branches WHERE task_id = $1
)
INSERT INTO durable_branches (task_id, branch_id, parent_branch_id, first_node_id)
SELECT $1, latest.branch_id, $3, $4 FROM latest, log
RETURNING branch_id;

-- name: set_durable_branch
UPDATE durable_logs SET branch_id = $2 WHERE task_id = $1;

-- name: durable_entry_exists
SELECT EXISTS (
    SELECT 1 FROM durable_entries WHERE task_id = $1 AND branch_id = $2 AND node_id = $3
);

-- name: durable_task_state
SELECT id, status, invocation_count, worker_id FROM tasks WHERE id = $1 AND tenant_id = $2;

-- name: pending_durable_nodes
-- The log entries of a task whose wait (match) has not fired yet.
SELECT durable_branch_id AS branch_id, durable_node_id AS node_id
FROM task_matches
WHERE task_id = $1 AND durable_node_id IS NOT NULL;

-- name: durable_log_nodes
SELECT branch_id, node_id FROM durable_entries WHERE task_id = $1;

-- name: durable_waiting_states
-- A worker's poll of the nodes it waits for ($2, $3, $4: task, branch, node of each): the
-- task's current invocation and whether the node is satisfied, in one statement however
-- many runs the worker holds. Nodes of tasks of other tenants, or gone, are left out.
SELECT w.task_id, w.branch_id, w.node_id, t.invocation_count,
       e.satisfied_at IS NOT NULL AS satisfied
FROM unnest($2::uuid[], $3::int[], $4::int[]) AS w (task_id, branch_id, node_id)
JOIN tasks t ON t.id = w.task_id AND t.tenant_id = $1
LEFT JOIN durable_entries e
    ON e.task_id = w.task_id AND e.branch_id = w.branch_id AND e.node_id = w.node_id;

-- name: durable_child_runs
SELECT r.id, w.name AS workflow_name, r.input::text AS input,
       r.finished_at IS NOT NULL AS finished
FROM workflow_runs r
JOIN workflows w ON w.id = r.workflow_id
WHERE r.id = ANY($1::uuid[]);

-- name: child_run_matches
SELECT m.id
FROM task_matches m
WHERE m.id IN (
    SELECT match_id FROM task_match_conditions
    WHERE kind = 'CHILD' AND satisfied_at IS NULL AND child_run_id = ANY($1::uuid[])
)
ORDER BY m.id
FOR UPDATE;

-- name: durable_delivery_state
-- The task's current invocation and how far that invocation has walked its log.
SELECT t.status, t.invocation_count, t.worker_id,
       CASE WHEN l.invocation_count = t.invocation_count THEN l.last_node_id ELSE 0 END
           AS reached_node_id,
       coalesce(l.branch_id, 1) AS branch_id
FROM tasks t
LEFT JOIN durable_logs l ON l.task_id = t.id
WHERE t.id = $1 AND t.tenant_id = $2;

-- name: durable_log_entries
SELECT branch_id, node_id, kind, satisfied_order, result, is_failure, error_message
FROM durable_entries
WHERE task_id = $1;

-- name: durable_signal
-- A wait of the pre-eviction API, by its signal key (core.durable.SIGNAL_BRANCH = 0).
SELECT node_id, satisfied_at IS NOT NULL AS satisfied, result
FROM durable_entries
WHERE task_id = $1 AND branch_id = 0 AND label = $2;

-- name: next_signal_node
SELECT coalesce(max(node_id), 0) + 1 FROM durable_entries WHERE task_id = $1 AND branch_id = 0;
