-- Named queries of the Postgres wake-up queue (state.queue_messages, state.queue_dead; migration
-- 0005). Used by dispatcher/queue/pg.py. The channel trace_queue wakes receivers.

-- name: bury
-- Messages received max times without an ack move to the dead table with their last error.
WITH dead AS (
    DELETE FROM state.queue_messages
    WHERE id IN (SELECT id FROM state.queue_messages
                 WHERE queue = %(queue)s AND visible_at <= clock_timestamp() AND receives >= %(max)s
                 ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED)
    RETURNING id, queue, body, receives, last_error, enqueued_at
)
INSERT INTO state.queue_dead (id, queue, body, receives, last_error, enqueued_at)
SELECT id, queue, body, receives,
       coalesce(last_error, 'received ' || receives || ' times without an ack'), enqueued_at
FROM dead ON CONFLICT (id) DO NOTHING;

-- name: receive
-- Up to n visible messages, invisible for the visibility timeout from now on.
UPDATE state.queue_messages m
SET receives = m.receives + 1,
    visible_at = clock_timestamp() + make_interval(secs => %(visibility)s)
WHERE m.id IN (SELECT id FROM state.queue_messages
               WHERE queue = %(queue)s AND visible_at <= clock_timestamp() AND receives < %(max)s
               ORDER BY id LIMIT %(n)s FOR UPDATE SKIP LOCKED)
RETURNING m.id, m.body, m.receives;

-- name: publish
INSERT INTO state.queue_messages (queue, body) SELECT %s, unnest(%s::bytea[]);

-- name: notify
-- Parameters: the channel, the queue.
SELECT pg_notify(%s, %s);

-- name: listen
LISTEN trace_queue;

-- name: ack
DELETE FROM state.queue_messages WHERE id = ANY(%s);

-- name: nack_dead
-- A nack on the last receive: dead now (fenced by the receive count).
WITH dead AS (DELETE FROM state.queue_messages WHERE id = %s AND receives = %s
              RETURNING id, queue, body, receives, enqueued_at)
INSERT INTO state.queue_dead (id, queue, body, receives, last_error, enqueued_at)
SELECT id, queue, body, receives, %s, enqueued_at FROM dead
ON CONFLICT (id) DO NOTHING;

-- name: nack_again
-- Visible again at once (fenced by the receive count).
UPDATE state.queue_messages SET visible_at = clock_timestamp(), last_error = %s
 WHERE id = %s AND receives = %s;
