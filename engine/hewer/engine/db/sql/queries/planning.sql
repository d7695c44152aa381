-- Plan choice for prepared statements that PostgreSQL would otherwise re-plan on every call.

-- name: begin_with_generic_plans
-- Opens the scheduler's transaction with generic plans for all of it, in one round trip (two
-- statements in one simple query). claim_queue_items is a prepared statement whose custom
-- plan PostgreSQL keeps preferring, so each scheduling round paid about 1 ms of planning
-- (bind) for a sub-millisecond claim; its generic plan is the same index walk per action
-- (measured in tests/bench/README.md). The round's other statements (rate limits,
-- assign_tasks) are keyed by ids and plan the same generically. Completions open their
-- transaction with it too: they may claim and assign the tasks they queue (a DAG hop,
-- services/scheduler.py assign_within).
BEGIN;
SET LOCAL plan_cache_mode = force_generic_plan;
