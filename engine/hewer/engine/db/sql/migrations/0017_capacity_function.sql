-- The scheduler's capacity read (query local_worker_capacity) as a function whose statement
-- is planned once per session and reused. As a prepared statement of its own PostgreSQL
-- re-planned it on every call: for the worker-id array its custom plan always looked cheaper
-- than the generic one, so the plan cache never switched (pg_prepared_statements: 0 generic,
-- 163 custom plans in a test run where every other hot statement went generic after five).
-- Planning was about 0.18 ms of a 0.31 ms call, and the read is on the critical path of every
-- scheduling round (services/scheduler.py). PL/pgSQL keeps the plan of RETURN QUERY per
-- session on every supported PostgreSQL version; the SET clause makes it the generic one.
--
-- A change to what it reads is a new migration with CREATE OR REPLACE FUNCTION.
CREATE FUNCTION hewer_local_worker_capacity(worker_ids uuid[], heartbeat_window float8)
RETURNS TABLE (id uuid, is_paused boolean, engine_id text, labels jsonb, alive boolean,
               used jsonb)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    RETURN QUERY
    SELECT w.id, w.is_paused, w.engine_id, w.labels,
           w.last_heartbeat_at > now() - make_interval(secs => heartbeat_window) AS alive,
           coalesce(u.used, '{}'::jsonb) AS used
    FROM workers w
    LEFT JOIN LATERAL (
        SELECT jsonb_object_agg(s.kind, s.units) AS used
        FROM (
            SELECT r.key AS kind, sum(r.value::int * g.holders)::bigint AS units
            FROM (
                -- counted per distinct request first: a worker's held tasks nearly all ask
                -- for the same slots, and unpacking one jsonb per held task (hundreds per
                -- round) was most of this query's time
                SELECT h.slot_requests, count(*) AS holders
                FROM (
                    SELECT t.slot_requests
                    FROM tasks t
                    WHERE t.worker_id = w.id AND t.slot_held AND t.batch_id IS NULL
                    UNION ALL
                    -- the members of a batch share one slot (they were assigned together)
                    SELECT DISTINCT ON (t.batch_id, t.assigned_at) t.slot_requests
                    FROM tasks t
                    WHERE t.worker_id = w.id AND t.slot_held AND t.batch_id IS NOT NULL
                ) h
                GROUP BY h.slot_requests
            ) g, jsonb_each_text(g.slot_requests) AS r
            GROUP BY r.key
        ) s
    ) u ON true
    WHERE w.id = ANY(worker_ids);
END
$$;
