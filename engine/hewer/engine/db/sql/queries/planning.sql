-- How PostgreSQL plans the engine's statements: generic plans for the transactions whose
-- statements it would otherwise re-plan on every call, and the planner settings of every
-- pooled connection.

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

-- name: engine_session
-- Every pooled connection of the engine plans without sequential scans where an index can
-- do (set once, when the pool opens the connection; db/base.py). The engine's statements
-- are keyed lookups: by ids, by an array of ids (unnest), or joined on them. Their generic
-- plans are made without knowing how many ids an array holds (PostgreSQL assumes 10) and
-- cost an index probe in every partition of runs, tasks and events, although execution
-- probes one; so while a day partition holds less than about ten thousand rows, which is
-- each new day and every day of a small installation, PostgreSQL preferred to read the whole
-- partition: assign_tasks, run_states and complete_tasks grew to 0.5-2 ms each as the
-- partition filled, instead of tens of microseconds (tests/bench/README.md, "Sequential
-- scans of small partitions"). Statements with no usable index still scan.
-- Nor does it plan parallel queries: with a few days of history the planner's cost of
-- run_states (an index probe in each of 14 partitions for an assumed 10 runs) crossed the
-- parallel threshold, and each DAG hop then started two parallel workers to read one run:
-- 7-9 ms instead of 0.1, a sequential 3-task DAG 20 -> 50-76 ms with 200,000 finished tasks
-- stored (tests/bench/history_bench.py). A worker's start costs more than any statement of
-- the engine's can gain from it.
SET enable_seqscan = off;
SET max_parallel_workers_per_gather = 0;
