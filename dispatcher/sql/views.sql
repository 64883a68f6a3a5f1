-- Named queries of the read-only views of runs and tasks (dispatcher/views.py): one query each,
-- no locks.

-- name: runs
-- The org's runs and their progress, newest first: one run (run NULL: all), of one state (NULL:
-- all).
SELECT r.run_id, r.org_id, r.kind, r.dag, r.dag_version, r.state, r.params, r.submitted_by, r.created_at,
       r.finished_at,
       coalesce((SELECT jsonb_object_agg(state, n) FROM (
                   SELECT state, count(*) AS n FROM state.tasks WHERE run_id = r.run_id GROUP BY state) s),
                '{}') AS tasks,
       (SELECT count(*) FROM state.tasks t WHERE t.run_id = r.run_id AND t.job = 'ingest'
          AND t.state = 'succeeded') AS chunks_done,
       (SELECT coalesce(sum((t.payload->'event'->>'end')::bigint
                            - (t.payload->'event'->>'start')::bigint + 1), 0)
          FROM state.tasks t WHERE t.run_id = r.run_id AND t.job = 'ingest' AND t.state = 'succeeded'
        ) AS blocks_done,
       coalesce((SELECT jsonb_object_agg(dataset_id, n) FROM (
                   SELECT dataset_id, sum(rows) AS n FROM state.task_outputs WHERE run_id = r.run_id
                   GROUP BY dataset_id) o), '{}') AS rows,
       (SELECT count(*) FROM state.task_outputs WHERE run_id = r.run_id) AS files,
       coalesce((SELECT jsonb_agg(e) FROM (
                   SELECT jsonb_build_object('task_id', task_id, 'job', job, 'state', state,
                                             'failures', failures, 'error', last_error) AS e
                   FROM state.tasks WHERE run_id = r.run_id AND last_error IS NOT NULL
                     AND state IN ('dead', 'queued', 'leased')
                   ORDER BY (state = 'dead') DESC, created_at LIMIT 5) x), '[]') AS errors
FROM state.runs r
WHERE r.org_id = %(org)s AND (%(run)s::uuid IS NULL OR r.run_id = %(run)s::uuid)
  AND (%(state)s::text IS NULL OR r.state = %(state)s::text)
ORDER BY r.created_at DESC LIMIT %(limit)s;

-- name: run_exists
SELECT 1 FROM state.runs WHERE org_id = %s AND run_id = %s;

-- name: run_tasks
SELECT task_id, run_id, job, operator, state, attempt, failures, payload->>'partition_key' AS partition,
       last_error, created_at, finished_at
FROM state.tasks WHERE run_id = %s AND (%s::text IS NULL OR state = %s)
ORDER BY created_at, task_id LIMIT %s OFFSET %s;

-- name: task
SELECT task_id, run_id, job, operator, state, attempt, failures, payload->>'partition_key' AS partition,
       last_error, created_at, finished_at, payload, reads, writes, max_attempts, lease_owner,
       lease_expires_at, cancel_requested, last_traceback
FROM state.tasks WHERE org_id = %s AND task_id = %s;

-- name: task_attempts
SELECT attempt, worker, started_at, finished_at, outcome, error, traceback
FROM state.task_attempts WHERE task_id = %s ORDER BY attempt;

-- name: task_logs
-- The last 500 lines, oldest first.
SELECT level, message, attempt, at FROM (SELECT * FROM state.task_logs WHERE task_id = %s
                                         ORDER BY id DESC LIMIT 500) l ORDER BY id;

-- name: task_outputs
SELECT dataset_id, uri, rows, bytes, block_start, block_end, attempt, sha256 FROM state.task_outputs
WHERE task_id = %s ORDER BY dataset_id, uri;

-- name: run_outputs
SELECT dataset_id, uri, rows, bytes, block_start, block_end, attempt, sha256 FROM state.task_outputs
WHERE org_id = %s AND run_id = %s ORDER BY dataset_id, block_start, uri;
