-- The scheduler read the capacity of every worker this replica holds on every round, although
-- only the workers that serve an action with a ready queue item can take anything: with 500
-- workers of which 50 serve the queued work, nine rows in ten were read, sent and decoded for
-- nothing (tests/bench/workers_bench.py).
--
-- hewer_worker_capacity reads only the workers, among worker_ids, that serve one of
-- action_ids, and with ready_only one of those of action_ids that have a ready item (one
-- index probe per action, with the claim's conditions: the probe has_ready_items made before
-- the safety tick's round, now part of the read; services/scheduler.py says when a round
-- asks for it). A round with nothing ready gets no row and opens no transaction.
-- tests/bench/capacity_bench.py, 500 workers and 33 partitions: 6.1 -> 2.3 ms when 50 of
-- them serve; when all of them do, the probes cost 0.1-0.3 ms more than reading them all.
-- (Naming the ready actions in every row, so that the claim could ask for those alone, cost
-- 0.5 ms more for 500 rows: the claim's probe of an action with nothing queued is cheaper.)
--
-- hewer_local_worker_capacity (0021) stays for replicas of the previous release during a
-- rolling upgrade, as a call of the new function with every action of its workers (so the
-- held slots are counted in one place); nothing of this release calls it.
CREATE FUNCTION hewer_worker_capacity(
    tenant uuid, worker_ids uuid[], action_ids text[], ready_only boolean,
    heartbeat_window float8
)
RETURNS TABLE (id uuid, is_paused boolean, engine_id text, labels jsonb, alive boolean,
               used jsonb)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    wanted text[] := action_ids;
BEGIN
    IF ready_only THEN
        -- the claim's own conditions (claim_queue_items), per action so that each is one
        -- probe of queue_items_claim_idx
        SELECT coalesce(array_agg(a.action_id), '{}') INTO wanted
        FROM unnest(action_ids) AS a(action_id)
        WHERE EXISTS (
            SELECT 1 FROM queue_items q
            WHERE q.tenant_id = tenant AND q.action_id = a.action_id AND NOT q.paused
              AND q.available_at <= now()
        );
        IF cardinality(wanted) = 0 THEN
            RETURN;
        END IF;
    END IF;
    RETURN QUERY
    WITH serving AS MATERIALIZED (
        SELECT w.id, w.is_paused, w.engine_id, w.labels, w.last_heartbeat_at
        FROM workers w
        WHERE w.id = ANY(worker_ids) AND w.actions && wanted
    ), holders AS (
        -- as in 0021: counted per worker and distinct request, a batch once; one pass over
        -- the held tasks of all the serving workers
        SELECT t.worker_id, t.slot_requests,
               CASE WHEN t.batch_id IS NULL THEN count(*) ELSE 1 END AS n
        FROM tasks t
        WHERE t.slot_held AND t.worker_id = ANY(ARRAY(SELECT s.id FROM serving s))
        GROUP BY t.worker_id, t.slot_requests, t.batch_id,
                 CASE WHEN t.batch_id IS NOT NULL THEN t.assigned_at END
    ), units AS (
        SELECT s.worker_id, jsonb_object_agg(s.kind, s.units) AS used_units
        FROM (
            SELECT g.worker_id, r.key AS kind, sum(r.value::int * g.n)::bigint AS units
            FROM holders g, jsonb_each_text(g.slot_requests) AS r
            GROUP BY g.worker_id, r.key
        ) s
        GROUP BY s.worker_id
    )
    SELECT w.id, w.is_paused, w.engine_id, w.labels,
           w.last_heartbeat_at > now() - make_interval(secs => heartbeat_window),
           coalesce(u.used_units, '{}'::jsonb)
    FROM serving w
    LEFT JOIN units u ON u.worker_id = w.id;
END
$$;

CREATE OR REPLACE FUNCTION hewer_local_worker_capacity(worker_ids uuid[], heartbeat_window float8)
RETURNS TABLE (id uuid, is_paused boolean, engine_id text, labels jsonb, alive boolean,
               used jsonb)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    -- the previous release read every worker it named; a worker without actions, which
    -- this leaves out, could take nothing anyway
    RETURN QUERY
    SELECT c.id, c.is_paused, c.engine_id, c.labels, c.alive, c.used
    FROM hewer_worker_capacity(
        NULL, worker_ids,
        ARRAY(SELECT DISTINCT a FROM workers w, unnest(w.actions) AS a
              WHERE w.id = ANY(worker_ids)),
        false, heartbeat_window
    ) AS c;
END
$$;
