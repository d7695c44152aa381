-- Placement: a step's desired worker labels from registration, in the engine's normalized
-- form ({key: {value, comparator, weight, required}}, see core/placement.py); NULL when the
-- step has none. A run's trigger-time labels (workflow_runs.desired_worker_labels, same
-- form) replace them for that run's tasks. The claim query reads both through the task.
ALTER TABLE steps ADD COLUMN desired_worker_labels jsonb;
