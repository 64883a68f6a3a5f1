-- The commit protocol's outbox (dispatcher/datasets/committer.py): a run that succeeded with
-- staged outputs gets a row here in the transaction that settled it; the committer turns its files
-- into dataset versions and cuts them over, then marks the row done. A crash anywhere leaves the
-- row pending, and committing again is idempotent.
CREATE TABLE state.run_commits (
    run_id        uuid PRIMARY KEY REFERENCES state.runs ON DELETE CASCADE,
    org_id        text NOT NULL,
    state         text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
    attempts      integer NOT NULL DEFAULT 0,
    available_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_error    text,
    versions      jsonb,                      -- done: {dataset: version} cut over
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at   timestamptz
);
CREATE INDEX run_commits_pending ON state.run_commits (org_id, available_at) WHERE state = 'pending';
