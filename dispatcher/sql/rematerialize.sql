-- Rematerialization on deploy (dispatcher/datasets/rematerialize.py; table: migration 0013): the
-- rematerializer's look at the rematerializations still building, the runs it started for their
-- jobs, and the versions those runs committed.

-- name: lock_rematerializer
-- One rematerializer at a time per org (several dispatchers): held to the end of the transaction.
SELECT pg_advisory_xact_lock(hashtext('trace.rematerialize:' || %(org)s));

-- name: building
SELECT remat_id, dag, dag_version, jobs, runs, built FROM state.rematerializations
 WHERE org_id = %(org)s AND state = 'building'
 ORDER BY created_at
   FOR UPDATE;

-- name: job_runs
-- The runs started for a rematerialization's jobs, with their commits.
SELECT r.run_id, r.state, c.state AS commit_state, c.versions, c.last_error,
       (SELECT string_agg(DISTINCT t.last_error, '; ') FROM state.tasks t
         WHERE t.run_id = r.run_id AND t.state = 'dead') AS task_errors
  FROM state.runs r LEFT JOIN state.run_commits c ON c.run_id = r.run_id
 WHERE r.org_id = %(org)s AND r.run_id = ANY(%(runs)s::uuid[]);

-- name: save_progress
UPDATE state.rematerializations SET runs = %(runs)s, built = %(built)s WHERE remat_id = %(remat)s;

-- name: finish
UPDATE state.rematerializations
   SET state = %(state)s, reason = %(reason)s, pointer_seq = %(seq)s, finished_at = clock_timestamp()
 WHERE remat_id = %(remat)s AND state = 'building'
RETURNING remat_id;

-- name: lock_one
-- The rematerialization a cutover completes, locked against a deploy superseding it meanwhile.
SELECT m.state, m.dag, m.dag_version, m.built, v.active
  FROM state.rematerializations m
  JOIN state.dag_versions v ON (v.org_id, v.dag, v.version) = (m.org_id, m.dag, m.dag_version)
 WHERE m.org_id = %(org)s AND m.remat_id = %(remat)s
   FOR UPDATE OF m;

-- name: pin_versions
-- The snapshot and table of each dataset version a job reads.
SELECT v.dataset_id, v.version, v.snapshot_id, v.state, d.table_name
  FROM unnest(%(datasets)s::text[], %(versions)s::bigint[]) AS a(dataset_id, version)
  JOIN state.dataset_versions v ON v.org_id = %(org)s AND (v.dataset_id, v.version) = (a.dataset_id, a.version)
  JOIN state.datasets d ON (d.org_id, d.dataset_id) = (v.org_id, v.dataset_id);

-- name: list
SELECT remat_id, dag, dag_version, jobs, state, runs, built, pointer_seq, reason, created_at, finished_at
  FROM state.rematerializations
 WHERE org_id = %(org)s AND (%(dag)s::text IS NULL OR dag = %(dag)s)
 ORDER BY created_at DESC LIMIT %(limit)s;
