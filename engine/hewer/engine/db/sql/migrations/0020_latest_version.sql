-- Each workflow names its latest version in a column, kept by a trigger on every new version,
-- instead of each reader finding it (`ORDER BY ordinal DESC LIMIT 1` over workflow_versions,
-- written out in seven queries). Readers join `workflows.latest_version_id`.
--
-- create_runs checks the versions its runs name against this column (services/triggers.py
-- keeps versions in a cache); the workflow row it locks carries it.
--
-- Versions are never deleted on their own (only with their workflow), so no reader sees the
-- column name a missing version; no foreign key, which would make the two tables refer to
-- each other.
ALTER TABLE workflows ADD COLUMN latest_version_id uuid;

UPDATE workflows w
SET latest_version_id = (SELECT v.id FROM workflow_versions v
                         WHERE v.workflow_id = w.id ORDER BY v.ordinal DESC LIMIT 1);

CREATE FUNCTION hewer_version_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE workflows w SET latest_version_id = NEW.id
    WHERE w.id = NEW.workflow_id
      AND NOT EXISTS (SELECT 1 FROM workflow_versions v
                      WHERE v.id = w.latest_version_id AND v.ordinal >= NEW.ordinal);
    RETURN NULL;
END
$$;

CREATE TRIGGER workflow_versions_added AFTER INSERT ON workflow_versions
    FOR EACH ROW EXECUTE FUNCTION hewer_version_added();
