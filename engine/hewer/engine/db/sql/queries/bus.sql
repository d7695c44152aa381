-- Cross-replica message bodies too large for NOTIFY.

-- name: park_bus_payload
INSERT INTO bus_payloads (body) VALUES ($1) RETURNING id;

-- name: fetch_bus_payload
SELECT body FROM bus_payloads WHERE id = $1;

-- name: prune_bus_payloads
-- Parked bodies are read within moments of their NOTIFY; five minutes is generous.
DELETE FROM bus_payloads WHERE created_at < now() - interval '5 minutes';
