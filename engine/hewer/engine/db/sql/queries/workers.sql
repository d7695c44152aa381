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

-- name: worker_heartbeats
-- The heartbeats a replica noted since its last flush, in one statement (services/heartbeats.py):
-- each beat's age is taken off this database's clock. greatest(): a listener that opened
-- meanwhile stored a newer time. Rows are locked in id order so that two flushes (two replicas
-- while a worker moves between them) cannot deadlock; the dead-worker sweep (timers.sql) skips
-- rows a flush holds instead of waiting for them.
WITH beats AS (
    SELECT b.id, b.tenant_id, now() - make_interval(secs => b.age) AS at
    FROM unnest($1::uuid[], $2::uuid[], $3::float8[]) AS b(id, tenant_id, age)
), locked AS (
    SELECT w.id FROM workers w JOIN beats b ON b.id = w.id AND b.tenant_id = w.tenant_id
    ORDER BY w.id
    FOR NO KEY UPDATE OF w
)
UPDATE workers w
SET last_heartbeat_at = greatest(w.last_heartbeat_at, b.at)
FROM beats b, locked l
WHERE w.id = b.id AND l.id = b.id
RETURNING w.id, w.tenant_id, w.is_active, w.last_listener_established;

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
