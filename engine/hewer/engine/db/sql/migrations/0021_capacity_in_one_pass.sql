-- The scheduler's capacity read (migration 0017) looked up each worker's held tasks on its
-- own (a lateral subquery per worker, and a second one for batches). tasks is partitioned by
-- day (0016) and a worker's tasks cannot be found by partition key, so every worker probed
-- every partition's index twice: the read cost workers x partitions, on the critical path of
-- every scheduling round. With 500 workers and the 33 partitions of the default 30-day
-- retention it took 21-33 ms (tests/bench/capacity_bench.py).
--
-- Now the held tasks of all the workers are read in one pass (one scan of each partition's
-- slot_held index for the whole worker list; those of finished days are empty) and grouped
-- per worker, request and batch: 4-7 ms for 500 workers, 1.4-2.4 ms for 50, whatever the
-- number of partitions. Same result: a batch's members still count as one holder.
CREATE OR REPLACE FUNCTION hewer_local_worker_capacity(worker_ids uuid[], heartbeat_window float8)
RETURNS TABLE (id uuid, is_paused boolean, engine_id text, labels jsonb, alive boolean,
               used jsonb)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    RETURN QUERY
    WITH holders AS (
        -- counted per worker and distinct request (a worker's held tasks nearly all ask for
        -- the same slots, and unpacking one jsonb per held task was most of the time); the
        -- members of a batch hold one slot together (they were assigned together), so a
        -- batch counts once
        SELECT t.worker_id, t.slot_requests,
               CASE WHEN t.batch_id IS NULL THEN count(*) ELSE 1 END AS n
        FROM tasks t
        WHERE t.slot_held AND t.worker_id = ANY(worker_ids)
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
    FROM workers w
    LEFT JOIN units u ON u.worker_id = w.id
    WHERE w.id = ANY(worker_ids);
END
$$;
