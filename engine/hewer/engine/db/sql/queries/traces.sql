-- OpenTelemetry spans (otel_spans) and the run rows a trace's engine spans are derived from.

-- name: insert_spans
-- One OTLP export's spans; a span the tenant already has (same trace and span id) is kept
-- as first received. Attributes, events and links arrive as JSON text.
INSERT INTO otel_spans (tenant_id, trace_id, span_id, parent_span_id, name, kind, service_name,
                        status_code, status_message, start_ns, duration_ns, resource_attributes,
                        attributes, events, links, scope_name, scope_version, task_run_id,
                        workflow_run_id, retry_count)
SELECT $1, s.trace_id, s.span_id, s.parent_span_id, s.name, s.kind, s.service_name,
       s.status_code, s.status_message, s.start_ns, s.duration_ns, s.resource::jsonb,
       s.attributes::jsonb, s.events::jsonb, s.links::jsonb, s.scope_name, s.scope_version,
       s.task_run_id, s.workflow_run_id, s.retry_count
FROM unnest($2::bytea[], $3::bytea[], $4::bytea[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::bigint[], $11::bigint[], $12::text[], $13::text[],
            $14::text[], $15::text[], $16::text[], $17::text[], $18::uuid[], $19::uuid[],
            $20::int[])
     AS s(trace_id, span_id, parent_span_id, name, kind, service_name, status_code,
          status_message, start_ns, duration_ns, resource, attributes, events, links,
          scope_name, scope_version, task_run_id, workflow_run_id, retry_count)
ON CONFLICT (tenant_id, trace_id, span_id) DO NOTHING
RETURNING 1;

-- name: trace_spans
SELECT trace_id, span_id, parent_span_id, name, kind, status_code, status_message, start_ns,
       duration_ns, resource_attributes, attributes, events, links, scope_name, scope_version,
       task_run_id, workflow_run_id, retry_count
FROM otel_spans
WHERE tenant_id = $1 AND trace_id = $2
ORDER BY start_ns, span_id
LIMIT $3;

-- name: trace_of_spans
-- The trace of a run or task known only from spans (its rows are gone): the latest attempt's.
SELECT trace_id
FROM otel_spans
WHERE tenant_id = $1 AND (workflow_run_id = $2 OR task_run_id = $2)
ORDER BY retry_count DESC, start_ns DESC
LIMIT 1;

-- name: trace_run_family
-- The runs related to a run by spawning: up to its root ancestor, then down every child run
-- (through the parent task, which both indexes cover), at most $3 of them.
WITH RECURSIVE up AS (
    SELECT id, parent_run_id, 0 AS depth
    FROM workflow_runs WHERE tenant_id = $1 AND id = $2
    UNION ALL
    SELECT r.id, r.parent_run_id, u.depth + 1
    FROM workflow_runs r JOIN up u ON r.id = u.parent_run_id
    WHERE u.depth < 64
), root AS (
    SELECT id FROM up ORDER BY depth DESC LIMIT 1
), down AS (
    SELECT id, 0 AS depth FROM root
    UNION ALL
    SELECT c.id, d.depth + 1
    FROM down d
    JOIN tasks t ON t.workflow_run_id = d.id
    JOIN workflow_runs c ON c.parent_task_id = t.id
    WHERE d.depth < 64
)
SELECT id FROM down LIMIT $3;

-- name: trace_runs
SELECT r.id, r.workflow_id, w.name AS workflow_name, r.workflow_version_id, r.status,
       r.created_at, r.finished_at, r.additional_metadata ->> 'traceparent' AS traceparent,
       r.parent_task_id, r.triggering_event_id, r.triggering_event_key,
       e.created_at AS event_seen_at
FROM workflow_runs r
JOIN workflows w ON w.id = r.workflow_id
LEFT JOIN events e ON e.id = r.triggering_event_id
WHERE r.tenant_id = $1 AND r.id = ANY($2::uuid[]);

-- name: trace_task_events
-- The tasks of the runs with their events in the order they were written (a task without
-- events yet has one row with NULL event columns).
SELECT t.id, t.workflow_run_id, t.step_id, t.readable_id, t.action_id, t.created_at,
       e.event_type, e.retry_count, e.message, e.created_at AS event_at
FROM tasks t
LEFT JOIN task_events e ON e.task_id = t.id
WHERE t.tenant_id = $1 AND t.workflow_run_id = ANY($2::uuid[])
ORDER BY t.created_at, t.id, e.id;

-- name: delete_old_spans
DELETE FROM otel_spans
WHERE (tenant_id, trace_id, span_id) IN (
    SELECT tenant_id, trace_id, span_id FROM otel_spans
    WHERE tenant_id = $1 AND received_at < $2
    LIMIT $3
)
RETURNING 1;
