-- Idempotency keys (issue 7): a workflow's key expression yields one key per trigger; the
-- run that claims it holds it per tenant, and a trigger yielding a held key creates nothing.
--
-- The claim is made in the transaction that inserts the run (INSERT ... ON CONFLICT is the
-- arbiter between replicas), so a failed insert releases it and a key never names a run
-- that does not exist: the foreign key is checked at commit, after the run is inserted.
CREATE TABLE idempotency_keys (
    tenant_id          uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key                text NOT NULL,
    run_id             uuid NOT NULL
                       REFERENCES workflow_runs (id) ON DELETE CASCADE
                       DEFERRABLE INITIALLY DEFERRED,
    -- method STATUS: released when the run finishes; TTL: held until expires_at
    release_on_finish  boolean NOT NULL,
    -- an expired key is free: the next claim takes it over, retention deletes it
    expires_at         timestamptz NOT NULL,
    claimed_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_run_idx ON idempotency_keys (run_id);
CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at);

-- the key a run claimed (NULL for runs of workflows without idempotency)
ALTER TABLE workflow_runs ADD COLUMN idempotency_key text;

-- STATUS release: one mechanism that every path finishing a run goes through (task
-- completion, failure, cancellation, timeouts, DAG progression), in the same transaction.
-- The WHEN guard keeps runs without a key free of any cost.
CREATE FUNCTION release_idempotency_key() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM idempotency_keys
    WHERE tenant_id = NEW.tenant_id AND key = NEW.idempotency_key AND run_id = NEW.id
      AND release_on_finish;
    RETURN NULL;
END
$$;

CREATE TRIGGER workflow_runs_release_idempotency_key
    AFTER UPDATE OF status ON workflow_runs
    FOR EACH ROW
    WHEN (NEW.idempotency_key IS NOT NULL
          AND NEW.status IN ('COMPLETED', 'FAILED', 'CANCELLED')
          AND OLD.status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED'))
    EXECUTE FUNCTION release_idempotency_key();
