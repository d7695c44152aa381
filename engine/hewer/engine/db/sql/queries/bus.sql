-- Cross-replica message bodies too large for NOTIFY.

-- name: park_bus_payload
INSERT INTO bus_payloads (body) VALUES ($1) RETURNING id;

-- name: fetch_bus_payload
SELECT body FROM bus_payloads WHERE id = $1;
