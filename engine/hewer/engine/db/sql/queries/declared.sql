-- Declared workflows (registered by the operator) and the objects a resource owns.

-- name: get_declared_workflow
SELECT d.tenant_id, d.name, d.workflow_id, d.resource, d.definition, d.worker_definition,
       d.drift, d.drift_at, d.updated_at
FROM declared_workflows d
WHERE d.tenant_id = $1 AND d.name = $2;

-- name: upsert_declared_workflow
INSERT INTO declared_workflows (tenant_id, name, workflow_id, resource, definition, drift)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (tenant_id, name) DO UPDATE
SET workflow_id = EXCLUDED.workflow_id,
    resource = EXCLUDED.resource,
    definition = EXCLUDED.definition,
    drift = EXCLUDED.drift,
    drift_at = CASE WHEN EXCLUDED.drift IS NULL THEN NULL
                    ELSE COALESCE(declared_workflows.drift_at, now()) END,
    updated_at = now();

-- name: set_declared_drift
-- A worker registered a definition under a declared name: remember it and the diff (NULL
-- when it matches the declaration).
UPDATE declared_workflows
SET worker_definition = $3,
    drift = $4,
    drift_at = CASE WHEN $4::text IS NULL THEN NULL ELSE now() END,
    updated_at = now()
WHERE tenant_id = $1 AND name = $2;

-- name: record_owned_object
INSERT INTO owned_objects (tenant_id, kind, object_id, resource)
VALUES ($1, $2, $3, $4)
ON CONFLICT (tenant_id, kind, object_id) DO UPDATE SET resource = EXCLUDED.resource;

-- name: forget_owned_object
DELETE FROM owned_objects WHERE tenant_id = $1 AND kind = $2 AND object_id = $3
RETURNING object_id;

-- name: owned_objects_of
SELECT kind, object_id, resource, created_at
FROM owned_objects
WHERE tenant_id = $1 AND ($2::text IS NULL OR resource = $2)
ORDER BY resource, kind, object_id;

-- name: revoke_tenant_api_token
UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, now())
WHERE id = $1 AND tenant_id = $2
RETURNING id;
