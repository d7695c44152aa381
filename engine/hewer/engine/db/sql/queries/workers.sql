-- Workers: registration, liveness, labels.

-- name: insert_worker
INSERT INTO workers (id, tenant_id, name, actions, slot_config, labels, runtime_info)
VALUES ($1, $2, $3, $4, $5, $6, $7);

-- name: get_worker
SELECT id, tenant_id, name, actions, slot_config, labels, engine_id, is_active, is_paused,
       last_heartbeat_at, last_listener_established
FROM workers
WHERE id = $1 AND tenant_id = $2;

-- name: worker_heartbeat
UPDATE workers SET last_heartbeat_at = now()
WHERE id = $1 AND tenant_id = $2
RETURNING is_active, last_listener_established;

-- name: worker_listening
UPDATE workers
SET is_active = true, engine_id = $3, last_listener_established = now(),
    last_heartbeat_at = now()
WHERE id = $1 AND tenant_id = $2
RETURNING id;

-- name: worker_disconnected
UPDATE workers SET is_active = false WHERE id = $1 AND engine_id = $2;

-- name: merge_worker_labels
UPDATE workers SET labels = labels || $3::jsonb
WHERE id = $1 AND tenant_id = $2
RETURNING id;
