-- Named queries of retention and gc (dispatcher/datasets/gc.py; migration 0012).

-- name: lock_pointers
-- Held (session lock) while gc decides, marks and expires: no cutover or rollback of the org can
-- come between (the same key as datasets.sql lock_pointers, which takes it per transaction).
SELECT pg_advisory_lock(hashtext('trace.dataset_pointers'), hashtext(%(org)s));

-- name: unlock_pointers
SELECT pg_advisory_unlock(hashtext('trace.dataset_pointers'), hashtext(%(org)s));

-- name: org_datasets
SELECT dataset_id, table_name FROM state.datasets WHERE org_id = %(org)s ORDER BY dataset_id;

-- name: pointer_sets
SELECT seq, pointers FROM state.dataset_pointer_sets WHERE org_id = %(org)s ORDER BY seq;

-- name: org_versions
SELECT dataset_id, version, state, snapshot_id, created_at, finished_at
  FROM state.dataset_versions WHERE org_id = %(org)s ORDER BY dataset_id, version;

-- name: mark_expired
UPDATE state.dataset_versions SET state = 'expired', expired_at = clock_timestamp()
 WHERE org_id = %(org)s AND dataset_id = %(dataset)s AND version = ANY(%(versions)s::bigint[])
   AND state NOT IN ('building', 'expired')
RETURNING version;

-- name: table_snapshots
-- The snapshots of every version not expired, of any org, whose dataset lives in the table.
SELECT DISTINCT v.snapshot_id
  FROM state.dataset_versions v JOIN state.datasets d USING (org_id, dataset_id)
 WHERE d.table_name = %(table)s AND v.state <> 'expired' AND v.snapshot_id IS NOT NULL;

-- name: staging_runs
SELECT run_id, org_id, state, finished_at FROM state.runs WHERE run_id = ANY(%(runs)s::uuid[]);

-- name: uncommitted_outputs
-- Files of runs that may still become versions: every run but those whose commit is done or
-- failed and those that ended without success.
SELECT DISTINCT o.uri
  FROM state.task_outputs o
  JOIN state.runs r ON r.run_id = o.run_id
  LEFT JOIN state.run_commits c ON c.run_id = o.run_id
 WHERE coalesce(c.state, '') NOT IN ('done', 'failed') AND r.state NOT IN ('failed', 'canceled');

-- name: manifest_files
-- Files the manifests of versions not expired list (of any org), except the versions named by
-- the two arrays of (dataset, version) of org %(org)s (a dry run: those it would expire).
SELECT DISTINCT f ->> 'uri' AS uri
  FROM state.dataset_versions v
 CROSS JOIN LATERAL jsonb_array_elements(
       CASE WHEN jsonb_typeof(v.manifest -> 'files') = 'array' THEN v.manifest -> 'files'
            ELSE '[]'::jsonb END) AS f
 WHERE v.state <> 'expired'
   AND NOT (v.org_id = %(org)s AND (v.dataset_id, v.version) IN (
            SELECT * FROM unnest(%(datasets)s::text[], %(versions)s::bigint[])));

-- name: now
SELECT clock_timestamp() AS now;
