-- Event filters and incoming webhooks. Every statement filters on tenant_id ($1).

-- name: filters_for_workflows
SELECT id, workflow_id, scope, expression, payload
FROM event_filters
WHERE tenant_id = $1 AND workflow_id = ANY($2::uuid[])
ORDER BY created_at, id;

-- name: insert_filter
INSERT INTO event_filters (id, tenant_id, workflow_id, scope, expression, payload, is_declarative)
SELECT $2, $1, w.id, $4, $5, $6, $7
FROM workflows w
WHERE w.tenant_id = $1 AND w.id = $3 AND w.deleted_at IS NULL
RETURNING *;

-- name: get_filter
SELECT * FROM event_filters WHERE tenant_id = $1 AND id = $2;

-- name: page_filters
WITH matched AS (
    SELECT f.id, f.created_at
    FROM event_filters f
    WHERE f.tenant_id = $1
      AND ($2::uuid[] IS NULL OR f.workflow_id = ANY($2::uuid[]))
      AND ($3::text[] IS NULL OR f.scope = ANY($3::text[]))
)
SELECT (SELECT count(*) FROM matched) AS total,
       ARRAY(SELECT id FROM matched ORDER BY created_at DESC, id DESC
             OFFSET $4 LIMIT $5) AS ids;

-- name: filters_by_ids
SELECT * FROM event_filters WHERE tenant_id = $1 AND id = ANY($2::uuid[]);

-- name: update_filter
UPDATE event_filters
SET expression = coalesce($3, expression),
    scope = coalesce($4, scope),
    payload = coalesce($5, payload),
    updated_at = now()
WHERE tenant_id = $1 AND id = $2
RETURNING *;

-- name: delete_filter
DELETE FROM event_filters WHERE tenant_id = $1 AND id = $2 RETURNING *;

-- name: declarative_filters
SELECT id, scope, expression, payload
FROM event_filters
WHERE tenant_id = $1 AND workflow_id = $2 AND is_declarative
FOR UPDATE;

-- name: delete_filters_by_ids
DELETE FROM event_filters WHERE tenant_id = $1 AND id = ANY($2::uuid[]);

-- name: insert_webhook
INSERT INTO webhooks (id, tenant_id, name, source_name, event_key_expression, scope_expression,
                      static_payload, return_event, auth_type, basic_username,
                      api_key_header_name, hmac_algorithm, hmac_encoding, hmac_signature_header,
                      secret_encrypted)
VALUES ($2, $1, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
ON CONFLICT (tenant_id, name) DO NOTHING
RETURNING *;

-- name: get_webhook
SELECT * FROM webhooks WHERE tenant_id = $1 AND name = $2;

-- name: list_webhooks
-- total: the number of matches of the whole listing (0 rows past the end: the caller counts).
SELECT h.*, count(*) OVER () AS total
FROM webhooks h
WHERE h.tenant_id = $1
  AND ($2::text[] IS NULL OR h.name = ANY($2::text[]))
  AND ($3::text[] IS NULL OR h.source_name = ANY($3::text[]))
ORDER BY h.created_at DESC, h.name
OFFSET $4 LIMIT $5;

-- name: update_webhook
-- scope and static payload come with a flag because NULL is meaningful for them (clears it).
UPDATE webhooks
SET event_key_expression = coalesce($3, event_key_expression),
    scope_expression = CASE WHEN $4::bool THEN $5 ELSE scope_expression END,
    static_payload = CASE WHEN $6::bool THEN $7::jsonb ELSE static_payload END,
    return_event = coalesce($8, return_event),
    updated_at = now()
WHERE tenant_id = $1 AND name = $2
RETURNING *;

-- name: delete_webhook
DELETE FROM webhooks WHERE tenant_id = $1 AND name = $2 RETURNING *;

-- name: insert_pushed_event
INSERT INTO events (id, tenant_id, key, payload, additional_metadata, priority, scope,
                    triggering_webhook_name)
VALUES ($2, $1, $3, $4, $5, $6, $7, $8)
RETURNING created_at;
