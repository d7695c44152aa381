-- Statistics for tables that outgrew theirs (services/statistics.py).
--
-- The engine's hot statements are prepared once per pooled connection and switch to a
-- generic plan after a few calls; that plan is kept until the statistics of a table it reads
-- change. A table that was never analyzed (a fresh install, and each new day partition of
-- runs, tasks and events) has none until autovacuum's next visit, up to
-- autovacuum_naptime (a minute by default) after its first rows, so for that long the plans
-- stay those made for an empty table. After 10,000 runs on a fresh database that doubled
-- PostgreSQL's CPU per sequential DAG run (tests/bench/README.md).
--
-- This function analyzes the engine's tables that hold at least min_rows live rows and
-- growth times as many as their statistics describe (a table never analyzed describes none),
-- and returns their names. Tables that only churn (the queue: rows in, rows out) or grow
-- slowly are left to autovacuum, whose thresholds (10 % of the rows changed) act long before
-- a table has grown several times over.
--
-- SKIP_LOCKED: a table another replica is analyzing, or that a partition change holds, is
-- left to the next call instead of waited for. Tables whose owner this role is not a member
-- of are left out (ANALYZE would only warn and skip them every time).
CREATE FUNCTION hewer_analyze_grown_tables(min_rows bigint, growth float8)
RETURNS SETOF text
LANGUAGE plpgsql
AS $$
DECLARE
    grown record;
BEGIN
    FOR grown IN
        SELECT s.schemaname, s.relname
        FROM pg_stat_user_tables s
        JOIN pg_class c ON c.oid = s.relid
        WHERE s.schemaname = current_schema()
          AND c.relkind = 'r'
          AND s.n_live_tup >= min_rows
          AND s.n_live_tup >= growth * greatest(c.reltuples, 0)
          AND pg_has_role(c.relowner, 'MEMBER')
        ORDER BY s.relname
    LOOP
        EXECUTE format('ANALYZE (SKIP_LOCKED) %I.%I', grown.schemaname, grown.relname);
        RETURN NEXT grown.relname;
    END LOOP;
END
$$;
