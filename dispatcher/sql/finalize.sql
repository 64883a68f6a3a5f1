-- Finalization (dispatcher/datasets/finalize.py): the finalizer's look at the hot tables and at the
-- finalize DAG's runs, and the pruning of hot rows once their blocks are cold and current.

-- name: lock_finalizer
-- One finalizer at a time per org (several dispatchers): held to the end of the transaction.
SELECT pg_advisory_xact_lock(hashtext('trace.finalize:' || %(org)s));

-- name: newest_run
-- The newest run of the finalize DAG, with its commit (runs are serial: one at a time).
SELECT r.run_id, r.state, r.finished_at, r.params, c.state AS commit_state, c.finished_at AS committed_at
  FROM state.runs r LEFT JOIN state.run_commits c ON c.run_id = r.run_id
 WHERE r.org_id = %(org)s AND r.dag = %(dag)s
 ORDER BY r.created_at DESC LIMIT 1;

-- name: hot_span
SELECT min(block_number) AS tail, max(block_number) AS head FROM hot.blocks WHERE chain_id = %(chain)s;

-- name: prune_blocks
DELETE FROM hot.blocks WHERE chain_id = %(chain)s AND block_number < %(below)s;

-- name: prune_transactions
DELETE FROM hot.transactions WHERE chain_id = %(chain)s AND block_number < %(below)s;

-- name: prune_logs
DELETE FROM hot.logs WHERE chain_id = %(chain)s AND block_number < %(below)s;

-- name: prune_transfers
DELETE FROM hot.transfers WHERE chain_id = %(chain)s AND block_number < %(below)s;

-- name: prune_stake_changes
DELETE FROM hot.stake_changes WHERE chain_id = %(chain)s AND block_number < %(below)s;
