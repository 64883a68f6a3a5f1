-- DAGs as code: every deployed version of a DAG file, the jobs of each version (the policies the
-- dispatcher reads for the tasks of a job), and which DAG produces each dataset. Written by
-- `trace dag deploy` (dispatcher/dag/store.py), one transaction per deploy or rollback.

-- A version is immutable once written; exactly one version of a DAG is active.
CREATE TABLE state.dag_versions (
    org_id       text NOT NULL DEFAULT 'default',
    dag          text NOT NULL,
    version      integer NOT NULL CHECK (version >= 1),
    digest       text NOT NULL,                 -- sha256 of the spec's canonical JSON
    spec         jsonb NOT NULL,                -- the validated spec (defaults filled in)
    source_yaml  text NOT NULL,                 -- the file as deployed
    source_path  text NOT NULL,
    deployed_by  text NOT NULL,
    deployed_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    active       boolean NOT NULL DEFAULT false,
    PRIMARY KEY (org_id, dag, version)
);
CREATE UNIQUE INDEX dag_versions_one_active ON state.dag_versions (org_id, dag) WHERE active;

-- The jobs of a version, with what the dispatcher needs to create and lease their tasks.
--   max_concurrency  tasks of the job leased at once (NULL: no limit)
--   max_attempts     attempts in all, the first included; then the task is dead
--   spec             the job's spec as JSON (inputs, outputs, triggers, config, ...)
CREATE TABLE state.dag_jobs (
    org_id              text NOT NULL DEFAULT 'default',
    dag                 text NOT NULL,
    version             integer NOT NULL,
    job                 text NOT NULL,
    operator            text NOT NULL,
    activation          text NOT NULL CHECK (activation IN ('source', 'reactive')),
    runtime             text NOT NULL CHECK (runtime IN ('lambda', 'ecs_platform', 'dispatcher')),
    max_concurrency     integer CHECK (max_concurrency IS NULL OR max_concurrency >= 1),
    max_attempts        integer NOT NULL CHECK (max_attempts >= 1),
    backoff_initial_ms  bigint NOT NULL CHECK (backoff_initial_ms > 0),
    backoff_max_ms      bigint NOT NULL CHECK (backoff_max_ms >= backoff_initial_ms),
    backoff_multiplier  double precision NOT NULL CHECK (backoff_multiplier >= 1),
    inputs              text[] NOT NULL DEFAULT '{}',
    outputs             text[] NOT NULL DEFAULT '{}',
    spec                jsonb NOT NULL,
    PRIMARY KEY (org_id, dag, version, job),
    FOREIGN KEY (org_id, dag, version) REFERENCES state.dag_versions ON DELETE CASCADE
);

-- One producing DAG per dataset (design doc 004: shared reads across DAGs, never shared writes).
-- The row follows the DAG's active version: claimed on deploy, released when the DAG stops
-- producing the dataset.
CREATE TABLE state.dataset_producers (
    org_id      text NOT NULL DEFAULT 'default',
    dataset_id  text NOT NULL,
    dag         text NOT NULL,
    version     integer NOT NULL,               -- the DAG version that claimed or last kept it
    claimed_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (org_id, dataset_id)
);
CREATE INDEX dataset_producers_dag ON state.dataset_producers (org_id, dag);
