-- Batch assignment (services/batches.py). A batch task's config is stored per step; the
-- config that applies to an action is the one of the latest version of its (live) workflow.
-- Batch tasks are queued like every task (queue_items); the flusher fills in each item's
-- group key and size once, then claims whole groups and assigns each group to one slot.
CREATE TABLE step_batch_configs (
    step_id uuid PRIMARY KEY REFERENCES steps (id) ON DELETE CASCADE,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    max_size integer NOT NULL CHECK (max_size >= 1),
    -- NULL: no interval flush (a group waits until it is full)
    max_interval_ms integer CHECK (max_interval_ms >= 0),
    group_key text,
    group_max_runs integer CHECK (group_max_runs >= 1),
    broadcast_output boolean NOT NULL DEFAULT false
);

-- which actions of a worker are batch actions (read when its stream opens and per flush)
CREATE INDEX steps_tenant_action_idx ON steps (tenant_id, action_id);

-- filled in by the flusher the first time it sees the item: the evaluated group key and the
-- bytes the item adds to a START_BATCH message
ALTER TABLE queue_items ADD COLUMN batch_key text, ADD COLUMN batch_bytes integer;

-- the batch an attempt runs in: its members share one slot (local_worker_capacity counts a
-- batch once), and batch_group_max_runs counts running batches per key
ALTER TABLE tasks ADD COLUMN batch_id uuid, ADD COLUMN batch_key text;

CREATE INDEX tasks_running_batches_idx ON tasks (tenant_id, action_id, batch_key)
    WHERE status = 'RUNNING' AND batch_id IS NOT NULL;
