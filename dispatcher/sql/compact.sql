-- Compaction (dispatcher/datasets/compact.py): how a compaction run ended, and its commit.

-- name: run_outcome
-- The run, the commit of its files (none: still running, or it staged nothing) and its tasks' last error.
SELECT r.state, c.state AS commit_state, c.last_error AS commit_error, c.versions,
       (SELECT t.last_error FROM state.tasks t
         WHERE t.run_id = r.run_id AND t.last_error IS NOT NULL
         ORDER BY t.finished_at DESC NULLS LAST LIMIT 1) AS task_error
  FROM state.runs r LEFT JOIN state.run_commits c ON c.run_id = r.run_id
 WHERE r.org_id = %(org)s AND r.run_id = %(run)s;
