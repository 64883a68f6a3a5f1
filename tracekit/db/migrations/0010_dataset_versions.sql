-- Versioned datasets (docs/datasets.md): the datasets of an org, every version built of each, and
-- the pointer sets readers pin. Postgres is the truth for which version is current: the newest
-- pointer set. A set is never updated; a cutover or a rollback inserts the next one.

CREATE TABLE state.datasets (
    org_id       text NOT NULL,
    dataset_id   text NOT NULL,
    kind         text NOT NULL DEFAULT 'derived' CHECK (kind IN ('chain', 'derived')),
    table_name   text NOT NULL,                  -- the Iceberg table (namespace.name)
    description  text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (org_id, dataset_id)
);

-- A version is built (state building), checked (ready or failed) and may then become current
-- through a cutover. Its rows are the Iceberg snapshot `snapshot_id`; `manifest` lists its files
-- (uri, rows, bytes, sha256, block range, task, attempt) and its schema.
CREATE TABLE state.dataset_versions (
    org_id          text NOT NULL,
    dataset_id      text NOT NULL,
    version         bigint NOT NULL CHECK (version >= 1),
    state           text NOT NULL DEFAULT 'building'
                    CHECK (state IN ('building', 'ready', 'failed', 'abandoned')),
    based_on        bigint,                      -- the version current when this one began
    snapshot_id     bigint,                      -- Iceberg snapshot holding this version's rows
    manifest        jsonb NOT NULL DEFAULT '{}',
    block_start     bigint,
    block_end       bigint,
    cold_watermark  bigint,                      -- chain datasets: last block in cold storage
    row_count       bigint NOT NULL DEFAULT 0,
    byte_count      bigint NOT NULL DEFAULT 0,
    file_count      integer NOT NULL DEFAULT 0,
    producer        jsonb NOT NULL DEFAULT '{}', -- job, dag, dag_version, run_id, tasks, code_version
    inputs          jsonb NOT NULL DEFAULT '{}', -- dataset -> version read
    metadata        jsonb NOT NULL DEFAULT '{}', -- the operator's own
    failure         text,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at     timestamptz,
    PRIMARY KEY (org_id, dataset_id, version),
    FOREIGN KEY (org_id, dataset_id) REFERENCES state.datasets
);

-- What readers see from `seq` on: every dataset's current version, the cold watermarks and the
-- active DAG versions at that moment (a rollback restores all three).
CREATE TABLE state.dataset_pointer_sets (
    org_id        text NOT NULL,
    seq           bigint NOT NULL CHECK (seq >= 1),
    pointers      jsonb NOT NULL,                -- {dataset_id: version}
    watermarks    jsonb NOT NULL DEFAULT '{}',   -- {dataset_id: last cold block}
    dag_versions  jsonb NOT NULL DEFAULT '{}',   -- {dag: active version}
    action        text NOT NULL CHECK (action IN ('cutover', 'rollback')),
    changed       text[] NOT NULL DEFAULT '{}',
    restores      bigint,                        -- rollback: the seq whose set this is
    actor         text NOT NULL,
    reason        text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (org_id, seq)
);
