-- Rematerialization on deploy (docs/datasets.md, "Rematerialization"): a deploy whose derived
-- jobs' materialization changed (or that adds derived jobs) records here, in the deploy's own
-- transaction, which jobs of the new DAG version must be built again, in dependency order. The
-- dispatcher's rematerializer starts one run per job once the jobs it reads from are built (each
-- reads its inputs at pinned versions: the versions this rematerialization built, else the current
-- ones), commits their versions WITHOUT cutting them over, and when every job is built cuts all of
-- them over in one pointer set. Until then readers see the previous versions (stale but
-- consistent). A newer deploy or a rollback of the DAG supersedes it: nothing of it is cut over.
CREATE TABLE state.rematerializations (
    remat_id      uuid PRIMARY KEY,
    org_id        text NOT NULL,
    dag           text NOT NULL,
    dag_version   integer NOT NULL,
    jobs          text[] NOT NULL,               -- in dependency order
    state         text NOT NULL DEFAULT 'building'
                  CHECK (state IN ('building', 'done', 'failed', 'superseded')),
    runs          jsonb NOT NULL DEFAULT '{}',   -- job -> run id started for it
    built         jsonb NOT NULL DEFAULT '{}',   -- dataset -> version built (ready, not yet current)
    pointer_seq   bigint,                        -- done: the pointer set of the cutover
    reason        text,                          -- failed or superseded: why
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at   timestamptz,
    FOREIGN KEY (org_id, dag, dag_version) REFERENCES state.dag_versions ON DELETE CASCADE
);
CREATE INDEX rematerializations_building ON state.rematerializations (org_id) WHERE state = 'building';

-- An operator's own metadata about a file it staged (what it read, a digest of its query, ...):
-- carried into the manifest of the version the file becomes part of, and merged into the
-- version's `metadata` (docs/datasets.md, "Lineage").
ALTER TABLE state.task_outputs ADD COLUMN metadata jsonb;

-- Lineage downstream (`trace datasets lineage`): which versions were built from a given version.
CREATE INDEX dataset_versions_inputs ON state.dataset_versions USING gin (inputs jsonb_path_ops);
