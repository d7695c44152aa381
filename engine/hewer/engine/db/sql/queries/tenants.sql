-- Tenants, secrets and API tokens.

-- name: ensure_tenant
WITH inserted AS (
    INSERT INTO tenants (name) VALUES ($1)
    ON CONFLICT (name) DO NOTHING
    RETURNING id
)
SELECT id FROM inserted
UNION ALL
SELECT id FROM tenants WHERE name = $1
LIMIT 1;

-- name: get_tenant
SELECT id, name, created_at FROM tenants WHERE id = $1;

-- name: get_tenant_by_name
SELECT id, name, created_at FROM tenants WHERE name = $1;

-- name: ensure_secret
WITH inserted AS (
    INSERT INTO engine_secrets (name, value) VALUES ($1, $2)
    ON CONFLICT (name) DO NOTHING
    RETURNING value
)
SELECT value FROM inserted
UNION ALL
SELECT value FROM engine_secrets WHERE name = $1
LIMIT 1;

-- name: insert_api_token
INSERT INTO api_tokens (id, tenant_id, name, expires_at) VALUES ($1, $2, $3, $4);

-- name: get_api_token
SELECT id, tenant_id, expires_at, revoked_at FROM api_tokens WHERE id = $1;

-- name: revoke_api_token
UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING id;
