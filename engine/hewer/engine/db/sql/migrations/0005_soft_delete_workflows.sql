-- Deleting a workflow keeps its runs, as Hatchet does: the row is renamed
-- ("<name>-<uuid>", so that the name can be registered again) and marked deleted, and
-- only what would start new runs goes with it (crons, pending schedules, filters, the
-- declaration). Retention removes a deleted workflow once its last run has expired.
ALTER TABLE workflows ADD COLUMN deleted_at timestamptz;

CREATE INDEX workflows_deleted_idx ON workflows (tenant_id) WHERE deleted_at IS NOT NULL;
