-- Idempotency keys (see migrations/0010_idempotency_keys.sql).

-- name: version_idempotency_config
-- A version's idempotency settings, from its stored registration (NULL when it has none).
SELECT definition -> 'idempotency' AS config FROM workflow_versions WHERE id = $1;

-- name: claim_idempotency_keys
-- Claims keys for runs inserted later in the same transaction (the keys of one call are
-- distinct). A free or expired key is taken and returned; a held one returns nothing, and
-- ON CONFLICT DO UPDATE still locks its row, so the holder read next by this transaction
-- cannot change before it ends. A concurrent claim of the same key waits for this one.
-- Rows go in key order (the caller sorts too): two calls sharing keys lock them in the
-- same order and cannot deadlock.
INSERT INTO idempotency_keys AS k (tenant_id, key, run_id, release_on_finish, expires_at)
SELECT $1, c.key, c.run_id, c.release_on_finish,
       clock_timestamp() + c.ttl_ms * interval '1 millisecond'
FROM unnest($2::text[], $3::uuid[], $4::bool[], $5::bigint[])
     AS c(key, run_id, release_on_finish, ttl_ms)
ORDER BY c.key
ON CONFLICT (tenant_id, key) DO UPDATE
SET run_id = EXCLUDED.run_id,
    release_on_finish = EXCLUDED.release_on_finish,
    expires_at = EXCLUDED.expires_at,
    claimed_at = now()
WHERE k.expires_at <= clock_timestamp()
RETURNING k.key;

-- name: idempotency_key_holders
SELECT key, run_id FROM idempotency_keys WHERE tenant_id = $1 AND key = ANY($2::text[]);

-- name: mark_idempotent_runs
-- Records on each new run the key it holds: the release trigger fires only for these runs.
UPDATE workflow_runs r SET idempotency_key = m.key
FROM unnest($1::uuid[], $2::text[]) AS m(run_id, key)
WHERE r.id = m.run_id;

-- name: release_idempotency_claims
-- Claims of runs that were not inserted after all (a child spawn found by its dedupe key).
DELETE FROM idempotency_keys WHERE tenant_id = $1 AND run_id = ANY($2::uuid[]);

-- name: delete_expired_idempotency_keys
-- Housekeeping: an expired key is free already (a claim takes it over); this keeps the
-- table small. A key locked by a claim in progress is left for the next pass.
DELETE FROM idempotency_keys k
USING (SELECT tenant_id, key FROM idempotency_keys
       WHERE expires_at <= now()
       LIMIT $1
       FOR UPDATE SKIP LOCKED) AS e
WHERE k.tenant_id = e.tenant_id AND k.key = e.key AND k.expires_at <= now()
RETURNING 1;
