-- Named queries of the stateful triggers' state (state.trigger_state, migration 0007).
-- Used by dispatcher/trigger_book.py and dispatcher/scheduler.py.

-- name: insert_states
-- The missing state rows (columns as arrays).
INSERT INTO state.trigger_state (org_id, dag, version, job, trigger_index, state, due_at)
SELECT %s, %s, %s, job, idx, st, due_at
FROM unnest(%s::text[], %s::int[], %s::jsonb[], %s::timestamptz[]) AS x(job, idx, st, due_at)
ON CONFLICT DO NOTHING;

-- name: lock_states
SELECT job, trigger_index, state, fired FROM state.trigger_state
WHERE org_id = %s AND dag = %s AND version = %s
  AND (job, trigger_index) IN (SELECT * FROM unnest(%s::text[], %s::int[]))
ORDER BY job, trigger_index FOR UPDATE;

-- name: save_state
UPDATE state.trigger_state SET state = %s, fired = %s, due_at = %s, updated_at = clock_timestamp()
 WHERE org_id = %s AND dag = %s AND version = %s AND job = %s AND trigger_index = %s;

-- name: delete_inactive
-- The rows of versions no longer active.
DELETE FROM state.trigger_state t WHERE org_id = %s AND NOT EXISTS (SELECT 1 FROM
    state.dag_versions v WHERE v.org_id = t.org_id AND v.dag = t.dag AND v.version = t.version
    AND v.active);

-- name: take_due
-- Rows whose time has come, of active versions; several schedulers never take the same one.
SELECT t.dag, t.version, t.job, t.trigger_index, t.state, t.fired
FROM state.trigger_state t JOIN state.dag_versions v USING (org_id, dag, version)
WHERE t.org_id = %s AND v.active AND t.due_at <= %s
ORDER BY t.due_at LIMIT %s FOR UPDATE OF t SKIP LOCKED;

-- name: set_aside
-- A trigger whose tick failed is tried again at the given time.
UPDATE state.trigger_state SET due_at = %s WHERE org_id = %s AND dag = %s
   AND version = %s AND job = %s AND trigger_index = %s;
