-- Named queries of tracekit/outbox.py (state.outbox, migrations 0003 and 0005).

-- name: insert
-- Side effects, one row each: (destination, key, payload, headers, delay in seconds); a row is
-- published no earlier than its delay after it was created (one clock reading for both).
WITH o AS MATERIALIZED (
    SELECT d, k, p, h, s, clock_timestamp() AS at
    FROM unnest(%s::text[], %s::bytea[], %s::bytea[], %s::jsonb[], %s::float8[]) AS o(d, k, p, h, s)
)
INSERT INTO state.outbox (destination, key, payload, headers, created_at, available_at)
SELECT d, k, p, h, at, at + make_interval(secs => s) FROM o;

-- name: notify
NOTIFY trace_outbox;

-- name: listen
LISTEN trace_outbox;

-- name: take_unpublished
-- One batch of this publisher's rows that are due, in id order, locked for this transaction.
SELECT id, destination, key, payload, headers FROM state.outbox
 WHERE published_at IS NULL AND available_at <= clock_timestamp()
   AND starts_with(destination, %s)
   AND (%s::text IS NULL OR NOT starts_with(destination, %s::text))
 ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED;

-- name: mark_published
UPDATE state.outbox SET published_at = clock_timestamp() WHERE id = ANY(%s);
