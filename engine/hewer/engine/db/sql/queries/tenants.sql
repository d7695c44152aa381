-- Tenants, secrets and API tokens.

-- name: ensure_tenant
-- The no-op DO UPDATE (not DO NOTHING plus a SELECT) is what makes two engines starting
-- at once on a new database safe: the SELECT's snapshot can predate the other's commit and
-- see no row, while DO UPDATE waits for that commit and returns the row it made. It sets a
-- column no key covers, so its row lock does not wait for the foreign keys' share locks.
INSERT INTO tenants (name) VALUES ($1)
ON CONFLICT (name) DO UPDATE SET created_at = tenants.created_at
RETURNING id;

-- name: get_tenant
SELECT id, name, created_at FROM tenants WHERE id = $1;

-- name: get_tenant_by_name
SELECT id, name, created_at FROM tenants WHERE name = $1;

-- name: ensure_secret
-- The first engine's value wins; see ensure_tenant for why DO UPDATE.
INSERT INTO engine_secrets (name, value) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET created_at = engine_secrets.created_at
RETURNING value;

-- name: insert_api_token
INSERT INTO api_tokens (id, tenant_id, name, expires_at) VALUES ($1, $2, $3, $4);

-- name: get_api_token
SELECT id, tenant_id, expires_at, revoked_at FROM api_tokens WHERE id = $1;

-- name: revoke_api_token
UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING id;
