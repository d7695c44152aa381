-- Workflow definitions: workflows, versions, steps, edges, event triggers.

-- name: upsert_workflow
INSERT INTO workflows (tenant_id, name, description)
VALUES ($1, $2, $3)
ON CONFLICT (tenant_id, name)
DO UPDATE SET description = EXCLUDED.description, updated_at = now()
RETURNING id;

-- name: lock_workflow
SELECT id FROM workflows WHERE id = $1 FOR UPDATE;

-- name: latest_version_of_workflow
SELECT v.id, v.checksum, v.ordinal
FROM workflows w
JOIN workflow_versions v ON v.id = w.latest_version_id
WHERE w.id = $1;

-- name: insert_version
INSERT INTO workflow_versions
    (tenant_id, workflow_id, ordinal, version, checksum, definition, sticky, default_priority)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING id;

-- name: insert_steps
INSERT INTO steps
    (id, tenant_id, workflow_version_id, readable_id, action_id, kind, position,
     timeout_seconds, schedule_timeout_seconds, retries, backoff_factor, backoff_max_seconds,
     is_durable, slot_requests, parents, desired_worker_labels)
SELECT s.id, $1, $2, s.readable_id, s.action_id, s.kind, s.position,
       s.timeout_seconds, s.schedule_timeout_seconds, s.retries, s.backoff_factor,
       s.backoff_max_seconds, s.is_durable, s.slot_requests::jsonb,
       ARRAY(SELECT jsonb_array_elements_text(s.parents::jsonb)), s.desired_worker_labels::jsonb
FROM unnest($3::uuid[], $4::text[], $5::text[], $6::text[], $7::int[], $8::int[], $9::int[],
            $10::int[], $11::float8[], $12::int[], $13::bool[], $14::text[], $15::text[],
            $16::text[])
     AS s(id, readable_id, action_id, kind, position, timeout_seconds,
          schedule_timeout_seconds, retries, backoff_factor, backoff_max_seconds, is_durable,
          slot_requests, parents, desired_worker_labels);

-- name: insert_edges
INSERT INTO step_edges (workflow_version_id, parent_step_id, child_step_id)
SELECT $1, e.parent_id, e.child_id
FROM unnest($2::uuid[], $3::uuid[]) AS e(parent_id, child_id);

-- name: insert_event_triggers
INSERT INTO workflow_event_triggers (workflow_version_id, tenant_id, event_key)
SELECT $1, $2, k FROM unnest($3::text[]) AS k
ON CONFLICT DO NOTHING;

-- name: latest_version_by_name
SELECT w.id AS workflow_id, w.latest_version_id AS version_id, w.is_paused
FROM workflows w
WHERE w.tenant_id = $1 AND w.name = $2 AND w.deleted_at IS NULL
  AND w.latest_version_id IS NOT NULL;

-- name: load_version
SELECT v.id, v.workflow_id, w.name AS workflow_name, v.default_priority, v.sticky, v.tenant_id,
       v.definition
FROM workflow_versions v
JOIN workflows w ON w.id = v.workflow_id
WHERE v.id = $1;

-- name: load_version_steps
SELECT id, readable_id, action_id, kind, position, parents, timeout_seconds,
       schedule_timeout_seconds, retries, backoff_factor, backoff_max_seconds, is_durable,
       slot_requests
FROM steps
WHERE workflow_version_id = $1
ORDER BY position;

-- name: workflows_for_event_key
-- Latest versions whose event triggers match the key; '*' in a trigger is a wildcard.
SELECT DISTINCT ON (w.id) w.id AS workflow_id, w.latest_version_id AS version_id, w.is_paused
FROM workflows w
JOIN workflow_event_triggers t ON t.workflow_version_id = w.latest_version_id
WHERE w.tenant_id = $1 AND w.deleted_at IS NULL
  AND $2 LIKE replace(replace(replace(t.event_key, '%', '\%'), '_', '\_'), '*', '%');

-- name: workflow_names
SELECT id, name FROM workflows WHERE id = ANY($1::uuid[]);
