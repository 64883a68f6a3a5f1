-- Named queries of runs (state.runs; migration 0005): submission, settling, cancel.
-- Used by dispatcher/runs.py.

-- name: run_by_key
SELECT run_id FROM state.runs WHERE org_id = %s AND idempotency_key = %s;

-- name: insert_run
-- No row back when a concurrent submission with the same idempotency key got there first.
INSERT INTO state.runs (org_id, kind, dag, dag_version, params, submitted_by, idempotency_key)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (org_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING run_id;

-- name: run_params
SELECT params FROM state.runs WHERE run_id = %s;

-- name: lock_runs
-- NO KEY UPDATE, not UPDATE: outputs and new tasks hold KEY SHARE locks on their run (foreign
-- key), which UPDATE would wait on -- two completions of one run would deadlock.
SELECT run_id FROM state.runs WHERE run_id = ANY(%s::uuid[]) ORDER BY run_id FOR NO KEY UPDATE;

-- name: settle_runs
-- A run whose tasks are all terminal ends: canceled if cancel was asked, failed if a task is
-- dead, else succeeded.
UPDATE state.runs r SET finished_at = clock_timestamp(),
    state = CASE WHEN r.state = 'canceling' THEN 'canceled'
                 WHEN EXISTS (SELECT 1 FROM state.tasks t
                              WHERE t.run_id = r.run_id AND t.state = 'dead') THEN 'failed'
                 ELSE 'succeeded' END
WHERE r.run_id = ANY(%s::uuid[]) AND r.state IN ('running', 'canceling')
  AND NOT EXISTS (SELECT 1 FROM state.tasks t WHERE t.run_id = r.run_id
                  AND t.state IN ('queued', 'leased'));

-- name: lock_live_tasks
-- Tasks before the run, in task order, as completion and the reaper lock them.
SELECT task_id FROM state.tasks WHERE run_id = %s AND org_id = %s
   AND state IN ('queued', 'leased') ORDER BY task_id FOR UPDATE;

-- name: lock_run
SELECT state FROM state.runs WHERE org_id = %s AND run_id = %s FOR NO KEY UPDATE;

-- name: mark_canceling
UPDATE state.runs SET state = 'canceling' WHERE run_id = %s;

-- name: cancel_queued_tasks
UPDATE state.tasks SET state = 'canceled', finished_at = clock_timestamp(), cancel_requested = true
 WHERE run_id = %s AND state = 'queued';

-- name: cancel_leased_tasks
-- They stop at their next heartbeat.
UPDATE state.tasks SET cancel_requested = true WHERE run_id = %s AND state = 'leased';

-- name: run_state
SELECT state FROM state.runs WHERE run_id = %s;

-- name: queue_commits
-- The runs among these that just succeeded with staged outputs: their files are to be committed
-- (dispatcher/datasets/committer.py). In the settling transaction, so no success is missed.
WITH due AS (
    INSERT INTO state.run_commits (run_id, org_id)
    SELECT r.run_id, r.org_id FROM state.runs r
     WHERE r.run_id = ANY(%s::uuid[]) AND r.state = 'succeeded'
       AND EXISTS (SELECT 1 FROM state.task_outputs o WHERE o.run_id = r.run_id)
    ON CONFLICT (run_id) DO NOTHING
    RETURNING run_id
)
SELECT count(*) AS queued FROM due;

-- name: notify_commits
NOTIFY trace_commits;

-- name: pin_inputs
-- The current version (newest pointer set) of each of these datasets, as a run pins it for reading.
WITH newest AS (
    SELECT pointers FROM state.dataset_pointer_sets WHERE org_id = %(org)s ORDER BY seq DESC LIMIT 1
)
SELECT v.dataset_id, v.version, v.snapshot_id, d.table_name
  FROM newest, jsonb_each_text(newest.pointers) AS p(dataset_id, version)
  JOIN state.dataset_versions v
    ON v.org_id = %(org)s AND v.dataset_id = p.dataset_id AND v.version = p.version::bigint
  JOIN state.datasets d ON d.org_id = v.org_id AND d.dataset_id = v.dataset_id
 WHERE p.dataset_id = ANY(%(datasets)s::text[]) AND v.snapshot_id IS NOT NULL
 ORDER BY v.dataset_id;
