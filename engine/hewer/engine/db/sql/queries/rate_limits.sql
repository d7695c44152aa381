-- Rate-limit buckets as the scheduler debits them (see core/rate_limits.py).

-- name: lock_rate_limits
-- In key order, so that two replicas debiting overlapping keys cannot deadlock.
SELECT key, limit_value, value, extract(epoch FROM last_refill)::float8 AS window_started,
       duration, extract(epoch FROM now())::float8 AS now
FROM rate_limits
WHERE tenant_id = $1 AND key = ANY($2::text[])
ORDER BY key
FOR UPDATE;

-- name: database_now
SELECT extract(epoch FROM now())::float8;

-- name: save_rate_limit_usage
UPDATE rate_limits r
SET value = u.used, last_refill = to_timestamp(u.started)
FROM unnest($2::text[], $3::int[], $4::float8[]) AS u(key, used, started)
WHERE r.tenant_id = $1 AND r.key = u.key;

-- name: defer_rate_limited
-- Items a rate limit holds back wait until their bucket refills instead of being claimed
-- every round; the first deferral of an item is a REQUEUED_RATE_LIMIT task event.
WITH d AS (
    SELECT * FROM unnest($2::bigint[], $3::float8[], $4::text[]) AS d(id, at, reason)
), old AS (
    SELECT q.id, q.task_id, q.retry_count, q.rate_limited
    FROM queue_items q JOIN d ON d.id = q.id
), moved AS (
    UPDATE queue_items q SET available_at = to_timestamp(d.at), rate_limited = true
    FROM d WHERE q.id = d.id
)
INSERT INTO task_events (tenant_id, task_id, workflow_run_id, retry_count, event_type, message)
SELECT $1, o.task_id, t.workflow_run_id, o.retry_count, 'REQUEUED_RATE_LIMIT', d.reason
FROM old o
JOIN d ON d.id = o.id
JOIN tasks t ON t.id = o.task_id
WHERE NOT o.rate_limited;

-- name: rate_limit_values
SELECT key, limit_value FROM rate_limits WHERE tenant_id = $1 AND key = ANY($2::text[]);
