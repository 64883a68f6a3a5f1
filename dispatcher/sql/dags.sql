-- Named queries of deployed DAGs (state.dag_versions, state.dag_jobs, state.dataset_producers;
-- migration 0006): deploys, rollbacks, retirements and reads (dispatcher/dag/store.py, with
-- %(name)s placeholders), and the lookups the dispatcher makes (dispatcher/catalog.py).

-- name: lock_org
-- Deploys, rollbacks and retirements of one org run one at a time (dataset ownership spans DAGs).
SELECT pg_advisory_xact_lock(hashtext('trace.dag_deploy'), hashtext(%(org)s));

-- name: active_version
SELECT version, digest, spec FROM state.dag_versions
 WHERE org_id = %(org)s AND dag = %(dag)s AND active;

-- name: next_version
SELECT coalesce(max(version), 0) + 1 AS version FROM state.dag_versions
 WHERE org_id = %(org)s AND dag = %(dag)s;

-- name: foreign_producers
-- Datasets of this list that another DAG produces.
SELECT dataset_id, dag, version FROM state.dataset_producers
 WHERE org_id = %(org)s AND dataset_id = ANY(%(datasets)s) AND dag <> %(dag)s
 ORDER BY dataset_id;

-- name: owned_datasets
SELECT dataset_id FROM state.dataset_producers WHERE org_id = %(org)s AND dag = %(dag)s;

-- name: deactivate
UPDATE state.dag_versions SET active = false WHERE org_id = %(org)s AND dag = %(dag)s AND active;

-- name: activate
UPDATE state.dag_versions SET active = true
 WHERE org_id = %(org)s AND dag = %(dag)s AND version = %(version)s;

-- name: insert_version
INSERT INTO state.dag_versions
       (org_id, dag, version, digest, spec, source_yaml, source_path, deployed_by, active)
VALUES (%(org)s, %(dag)s, %(version)s, %(digest)s, %(spec)s, %(source_yaml)s, %(source_path)s,
        %(deployed_by)s, true)
RETURNING deployed_at;

-- name: insert_job
INSERT INTO state.dag_jobs
       (org_id, dag, version, job, operator, activation, runtime, max_concurrency, max_attempts,
        backoff_initial_ms, backoff_max_ms, backoff_multiplier, inputs, outputs, spec)
VALUES (%(org)s, %(dag)s, %(version)s, %(job)s, %(operator)s, %(activation)s, %(runtime)s,
        %(max_concurrency)s, %(max_attempts)s, %(backoff_initial_ms)s, %(backoff_max_ms)s,
        %(backoff_multiplier)s, %(inputs)s, %(outputs)s, %(spec)s);

-- name: release_datasets
-- The DAG's datasets it no longer produces; returns them.
DELETE FROM state.dataset_producers
 WHERE org_id = %(org)s AND dag = %(dag)s AND NOT (dataset_id = ANY(%(datasets)s))
RETURNING dataset_id;

-- name: claim_datasets
INSERT INTO state.dataset_producers (org_id, dataset_id, dag, version)
SELECT %(org)s, dataset_id, %(dag)s, %(version)s FROM unnest(%(datasets)s::text[]) AS dataset_id
ON CONFLICT (org_id, dataset_id) DO UPDATE SET version = EXCLUDED.version
 WHERE state.dataset_producers.dag = EXCLUDED.dag;

-- name: versions
SELECT version, digest, active, spec, source_yaml, source_path, deployed_by, deployed_at
  FROM state.dag_versions WHERE org_id = %(org)s AND dag = %(dag)s ORDER BY version;

-- name: version
SELECT version, digest, active, spec, source_yaml, source_path, deployed_by, deployed_at
  FROM state.dag_versions WHERE org_id = %(org)s AND dag = %(dag)s AND version = %(version)s;

-- name: active_full
SELECT version, digest, active, spec, source_yaml, source_path, deployed_by, deployed_at
  FROM state.dag_versions WHERE org_id = %(org)s AND dag = %(dag)s AND active;

-- name: dags
SELECT v.dag, v.version, v.digest, v.deployed_at, v.deployed_by,
       (SELECT count(*) FROM state.dag_jobs j
         WHERE (j.org_id, j.dag, j.version) = (v.org_id, v.dag, v.version)) AS jobs
  FROM state.dag_versions v WHERE v.org_id = %(org)s AND v.active ORDER BY v.dag;

-- name: producers
SELECT dataset_id, dag, version, claimed_at FROM state.dataset_producers
 WHERE org_id = %(org)s ORDER BY dataset_id;

-- name: job_at_version
SELECT version, job, operator, activation, runtime, max_concurrency, max_attempts,
       backoff_initial_ms, backoff_max_ms, backoff_multiplier, inputs, outputs, spec
  FROM state.dag_jobs
 WHERE org_id = %(org)s AND dag = %(dag)s AND version = %(version)s AND job = %(job)s;

-- name: active_job
SELECT j.version, j.job, j.operator, j.activation, j.runtime, j.max_concurrency, j.max_attempts,
       j.backoff_initial_ms, j.backoff_max_ms, j.backoff_multiplier, j.inputs, j.outputs, j.spec
  FROM state.dag_jobs j
  JOIN state.dag_versions v USING (org_id, dag, version)
 WHERE j.org_id = %(org)s AND j.dag = %(dag)s AND j.job = %(job)s AND v.active;

-- name: active_versions
-- The org's DAGs and their active version.
SELECT dag, version FROM state.dag_versions WHERE org_id = %s AND active ORDER BY dag;

-- name: jobs
-- The jobs of one version (org, dag, version).
SELECT job, operator, max_concurrency, max_attempts, backoff_initial_ms, backoff_max_ms,
       backoff_multiplier, spec FROM state.dag_jobs
 WHERE org_id = %s AND dag = %s AND version = %s;

-- name: versioned_datasets
-- The datasets whose versions Trace keeps (a derived job reads only these: dispatcher/dag/rematerialize.py).
SELECT dataset_id FROM state.datasets WHERE org_id = %(org)s;

-- name: insert_rematerialization
INSERT INTO state.rematerializations (remat_id, org_id, dag, dag_version, jobs)
VALUES (%(remat)s, %(org)s, %(dag)s, %(version)s, %(jobs)s);
