-- Named queries of versioned datasets (migration 0010; dispatcher/datasets/store.py).

-- name: lock_pointers
-- One writer of an org's pointer sets at a time (cutovers and rollbacks queue here).
SELECT pg_advisory_xact_lock(hashtext('trace.dataset_pointers'), hashtext(%(org)s));

-- name: ensure_dataset
INSERT INTO state.datasets (org_id, dataset_id, kind, table_name, description)
VALUES (%(org)s, %(dataset)s, %(kind)s, %(table)s, %(description)s)
ON CONFLICT (org_id, dataset_id) DO NOTHING;

-- name: newest_set
-- What readers pin: one row, so never half of a change.
SELECT seq, pointers, watermarks, dag_versions FROM state.dataset_pointer_sets
 WHERE org_id = %(org)s ORDER BY seq DESC LIMIT 1;

-- name: set_at
SELECT seq, pointers, watermarks, dag_versions FROM state.dataset_pointer_sets
 WHERE org_id = %(org)s AND seq = %(seq)s;

-- name: insert_set
INSERT INTO state.dataset_pointer_sets
       (org_id, seq, pointers, watermarks, dag_versions, action, changed, restores, actor, reason)
VALUES (%(org)s, %(seq)s, %(pointers)s, %(watermarks)s, %(dag_versions)s, %(action)s, %(changed)s,
        %(restores)s, %(actor)s, %(reason)s);

-- name: history
SELECT seq, pointers, watermarks, dag_versions, action, changed, restores, actor, reason, created_at
  FROM state.dataset_pointer_sets WHERE org_id = %(org)s ORDER BY seq DESC LIMIT %(limit)s;

-- name: candidates
-- The versions a cutover names (dataset x version pairs as two parallel arrays).
SELECT v.dataset_id, v.version, v.state, v.failure, v.cold_watermark
  FROM state.dataset_versions v
  JOIN unnest(%(datasets)s::text[], %(versions)s::bigint[]) AS a(dataset_id, version)
    ON v.dataset_id = a.dataset_id AND v.version = a.version
 WHERE v.org_id = %(org)s;

-- name: active_dags
SELECT dag, version FROM state.dag_versions WHERE org_id = %(org)s AND active ORDER BY dag;

-- name: deactivate_dag
-- A rollback restores a DAG's active version in two statements (the partial unique index allows
-- one active version, checked row by row): this one, then activate_dag_version.
UPDATE state.dag_versions SET active = false WHERE org_id = %(org)s AND dag = %(dag)s AND active;

-- name: activate_dag_version
UPDATE state.dag_versions SET active = true
 WHERE org_id = %(org)s AND dag = %(dag)s AND version = %(version)s
RETURNING version;

-- name: live_runs_of_dag_version
SELECT run_id FROM state.runs
 WHERE org_id = %(org)s AND dag = %(dag)s AND dag_version = %(version)s
   AND state IN ('running', 'canceling')
 ORDER BY run_id;

-- name: new_version
-- The next version number of a dataset, building, based on the version current now.
INSERT INTO state.dataset_versions (org_id, dataset_id, version, based_on, producer, inputs, metadata)
SELECT %(org)s, %(dataset)s, coalesce(max(version), 0) + 1, %(based_on)s, %(producer)s, %(inputs)s,
       %(metadata)s
  FROM state.dataset_versions WHERE org_id = %(org)s AND dataset_id = %(dataset)s
RETURNING version;

-- name: lock_dataset
-- Version numbers of one dataset are handed out one at a time.
SELECT 1 FROM state.datasets WHERE org_id = %(org)s AND dataset_id = %(dataset)s FOR UPDATE;

-- name: dataset_exists
SELECT 1 FROM state.datasets WHERE org_id = %(org)s AND dataset_id = %(dataset)s;

-- name: finish_version
UPDATE state.dataset_versions
   SET state = %(state)s, failure = %(failure)s, snapshot_id = coalesce(%(snapshot_id)s, snapshot_id),
       manifest = coalesce(%(manifest)s, manifest), block_start = coalesce(%(block_start)s, block_start),
       block_end = coalesce(%(block_end)s, block_end),
       cold_watermark = coalesce(%(cold_watermark)s, cold_watermark),
       row_count = coalesce(%(rows)s, row_count), byte_count = coalesce(%(bytes)s, byte_count),
       file_count = coalesce(%(files)s, file_count), metadata = coalesce(%(metadata)s, metadata),
       finished_at = clock_timestamp()
 WHERE org_id = %(org)s AND dataset_id = %(dataset)s AND version = %(version)s AND state = 'building'
RETURNING version;

-- name: datasets
SELECT d.dataset_id, d.kind, d.table_name, d.description,
       (SELECT count(*) FROM state.dataset_versions v
         WHERE v.org_id = d.org_id AND v.dataset_id = d.dataset_id) AS versions
  FROM state.datasets d WHERE d.org_id = %(org)s ORDER BY d.dataset_id;

-- name: versions
SELECT version, state, based_on, snapshot_id, block_start, block_end, cold_watermark, row_count,
       byte_count, file_count, producer, inputs, metadata, failure, created_at, finished_at
  FROM state.dataset_versions WHERE org_id = %(org)s AND dataset_id = %(dataset)s
 ORDER BY version DESC LIMIT %(limit)s;

-- name: version
SELECT version, state, based_on, snapshot_id, manifest, block_start, block_end, cold_watermark,
       row_count, byte_count, file_count, producer, inputs, metadata, failure, created_at, finished_at
  FROM state.dataset_versions WHERE org_id = %(org)s AND dataset_id = %(dataset)s AND version = %(version)s;

-- name: run
SELECT run_id, org_id, kind, dag, dag_version, state, params, created_at, finished_at FROM state.runs
 WHERE org_id = %(org)s AND run_id = %(run)s;

-- name: run_outputs
-- The files the run's attempts committed (fenced at completion: no stale attempt's file is here).
SELECT o.dataset_id, o.uri, o.rows, o.bytes, o.task_id::text AS task_id, o.attempt, o.block_start,
       o.block_end, o.sha256, o.metadata, t.job
  FROM state.task_outputs o JOIN state.tasks t USING (task_id)
 WHERE o.org_id = %(org)s AND o.run_id = %(run)s
 ORDER BY o.dataset_id, o.block_start, o.uri;

-- name: version_of_run
SELECT version, state FROM state.dataset_versions
 WHERE org_id = %(org)s AND dataset_id = %(dataset)s AND producer ->> 'run_id' = %(run)s
 ORDER BY version DESC LIMIT 1;

-- name: snapshots
SELECT v.dataset_id, v.snapshot_id
  FROM state.dataset_versions v
  JOIN unnest(%(datasets)s::text[], %(versions)s::bigint[]) AS a(dataset_id, version)
    ON v.dataset_id = a.dataset_id AND v.version = a.version
 WHERE v.org_id = %(org)s AND v.snapshot_id IS NOT NULL;

-- name: take_commit
-- One due run to commit, locked for the committing transaction (several dispatchers: SKIP LOCKED).
SELECT run_id, attempts FROM state.run_commits
 WHERE org_id = %(org)s AND state = 'pending' AND available_at <= clock_timestamp()
 ORDER BY available_at, run_id LIMIT 1 FOR UPDATE SKIP LOCKED;

-- name: commit_done
UPDATE state.run_commits SET state = 'done', versions = %(versions)s, finished_at = clock_timestamp(),
       attempts = attempts + 1, last_error = NULL
 WHERE run_id = %(run)s;

-- name: commit_failed
-- failed: the run's files cannot make a version (the reason is kept); pending: try again later.
UPDATE state.run_commits SET state = %(state)s, attempts = attempts + 1, last_error = %(error)s,
       available_at = clock_timestamp() + make_interval(secs => %(delay)s),
       finished_at = CASE WHEN %(state)s = 'failed' THEN clock_timestamp() END
 WHERE run_id = %(run)s;

-- name: commit_state
SELECT state, attempts, last_error, versions FROM state.run_commits WHERE run_id = %(run)s;

-- name: job_outputs
-- The write spec of each dataset a DAG version's jobs write (a derived table's unique key).
SELECT o ->> 'dataset' AS dataset, o -> 'write' AS write
  FROM state.dag_jobs j, jsonb_array_elements(j.spec -> 'outputs') AS o
 WHERE j.org_id = %(org)s AND j.dag = %(dag)s AND j.version = %(version)s;

-- name: consumers
-- Lineage downstream: the versions whose inputs name this dataset version.
SELECT dataset_id, version, state, producer, created_at FROM state.dataset_versions
 WHERE org_id = %(org)s AND inputs @> jsonb_build_object(%(dataset)s::text, %(version)s::bigint)
 ORDER BY dataset_id, version;
