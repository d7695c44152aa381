-- Plan choice for prepared statements that PostgreSQL would otherwise re-plan on every call.

-- name: use_generic_plans
-- For the rest of the transaction, or until use_default_plans. claim_queue_items is a
-- prepared statement whose custom plan PostgreSQL keeps preferring, so each scheduling round
-- paid about 1 ms of planning (bind) for a sub-millisecond claim; its generic plan is the
-- same index walk per action (measured in tests/bench/README.md).
SET LOCAL plan_cache_mode = force_generic_plan;

-- name: use_default_plans
SET LOCAL plan_cache_mode TO DEFAULT;
