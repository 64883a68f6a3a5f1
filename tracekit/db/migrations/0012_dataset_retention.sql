-- Retention (docs/datasets.md, "Retention and gc"): a version no pointer set worth keeping names
-- is marked expired by `trace datasets gc` (or the dispatcher's periodic gc), then its Iceberg
-- snapshot is removed and the files only it used are deleted. An expired version is never current
-- again: a cutover to it, or a rollback to a pointer set naming it, is refused.
ALTER TABLE state.dataset_versions DROP CONSTRAINT dataset_versions_state_check;
ALTER TABLE state.dataset_versions ADD CONSTRAINT dataset_versions_state_check
    CHECK (state IN ('building', 'ready', 'failed', 'abandoned', 'expired'));
ALTER TABLE state.dataset_versions ADD COLUMN expired_at timestamptz;
