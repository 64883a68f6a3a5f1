-- Named queries of events: the new data tasks emit (state.task_events, migration 0005) and
-- external events (state.external_events, migration 0007).
-- Used by dispatcher/store.py and dispatcher/signals.py.

-- name: insert_task_events
-- Returns the events new to the store (an event id already there is skipped).
INSERT INTO state.task_events (event_id, org_id, run_id, producer_task_id, attempt,
                               dataset_id, partition_key, payload)
SELECT id, %s, %s, %s, %s, ds, pk, p
FROM unnest(%s::text[], %s::text[], %s::text[], %s::jsonb[]) AS e(id, ds, pk, p)
ON CONFLICT (event_id) DO NOTHING RETURNING event_id;

-- name: insert_external_event
-- No row back when this name and key were received before.
INSERT INTO state.external_events (org_id, name, key, payload, received_from)
VALUES (%s, %s, %s, %s::jsonb, %s) ON CONFLICT DO NOTHING RETURNING received_at;
