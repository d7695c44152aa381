-- Objects declared by Kubernetes resources (the operator): declared workflows, whose
-- definition a worker's registration must not replace, and which engine objects each
-- resource owns (so that deleting the resource can clean them up).

-- A workflow registered by the operator from a Workflow resource. While a row exists, a
-- worker's PutWorkflow with a different definition keeps the declared version; the worker's
-- definition and a short diff are kept here and reported as drift.
CREATE TABLE declared_workflows (
    tenant_id          uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name               text NOT NULL,
    workflow_id        uuid NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    -- "namespace/name" of the resource that declares it
    resource           text NOT NULL,
    definition         jsonb NOT NULL,
    worker_definition  jsonb,
    drift              text,
    drift_at           timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);
CREATE INDEX declared_workflows_workflow_idx ON declared_workflows (workflow_id);

-- Engine objects created on behalf of a resource: kind is 'workflow', 'token', 'cron' or
-- 'rate_limit'; object_id is the engine's id (or key) of the object.
CREATE TABLE owned_objects (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind        text NOT NULL,
    object_id   text NOT NULL,
    resource    text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, kind, object_id)
);
CREATE INDEX owned_objects_resource_idx ON owned_objects (tenant_id, resource);
