-- Events, event filters and incoming webhooks.

-- The incoming webhook an event came through (the REST events list shows it).
ALTER TABLE events ADD COLUMN triggering_webhook_name text;
CREATE INDEX events_tenant_scope_idx ON events (tenant_id, scope) WHERE scope IS NOT NULL;

-- Event filters. A workflow with filters runs for an event only through filters of the
-- event's scope whose CEL expression holds, once per such filter. Declarative filters come
-- from the workflow's registration (default_filters) and are replaced on each registration.
CREATE TABLE event_filters (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    workflow_id     uuid NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    scope           text NOT NULL,
    expression      text NOT NULL,
    payload         jsonb NOT NULL DEFAULT '{}',
    is_declarative  boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX event_filters_workflow_idx ON event_filters (workflow_id, scope);
CREATE INDEX event_filters_tenant_idx ON event_filters (tenant_id, created_at DESC);

-- Incoming webhooks, addressed by (tenant, name). The one secret of the auth method (basic
-- password, API key or HMAC signing secret) is stored encrypted (Fernet), never in clear.
CREATE TABLE webhooks (
    id                        uuid NOT NULL UNIQUE,
    tenant_id                 uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name                      text NOT NULL,
    source_name               text NOT NULL
                              CHECK (source_name IN ('GENERIC', 'GITHUB', 'STRIPE', 'SLACK',
                                                     'LINEAR', 'SVIX')),
    event_key_expression      text NOT NULL,
    scope_expression          text,
    static_payload            jsonb,
    return_event              boolean NOT NULL DEFAULT true,
    auth_type                 text NOT NULL CHECK (auth_type IN ('BASIC', 'API_KEY', 'HMAC')),
    basic_username            text,
    api_key_header_name       text,
    hmac_algorithm            text CHECK (hmac_algorithm IN ('SHA1', 'SHA256', 'SHA512', 'MD5')),
    hmac_encoding             text CHECK (hmac_encoding IN ('HEX', 'BASE64', 'BASE64URL')),
    hmac_signature_header     text,
    secret_encrypted          bytea NOT NULL,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);
