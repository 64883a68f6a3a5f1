-- The Aggregator's reads of the hot tables (migrations 0001, 0008): one batch of blocks, in each
-- dataset's sort order (the primary key's), as CSV (COPY: parsed into Arrow at once, see
-- operators/aggregator/aggregate.py). Run in one REPEATABLE READ transaction: every table is read
-- at the same moment. The columns are those of transform.HOT_COLUMNS, in that order; blocks add
-- log_count (for the checks), transactions and logs their block_hash: the aggregator keeps only
-- the rows of the block hash hot.blocks holds at their height (the canonical block), comparing
-- hashes itself rather than joining hot.blocks here (a join of a batch's rows costs Postgres a
-- hash join and a sort; the rows come in key order from the primary key).
-- Parameters: chain, first, last (inclusive).

-- name: head
SELECT max(block_number) AS head FROM hot.blocks WHERE chain_id = %(chain)s;

-- name: blocks
COPY (
SELECT block_number, block_hash, parent_hash, author, gas_used, extra_data, "timestamp",
       base_fee_per_gas, tx_count, chain_id, log_count
  FROM hot.blocks
 WHERE chain_id = %(chain)s AND block_number BETWEEN %(first)s AND %(last)s
 ORDER BY block_number
) TO STDOUT (FORMAT csv);

-- name: transactions
COPY (
SELECT t.block_number, t.transaction_index, t.transaction_hash, t.nonce, t.from_address, t.to_address,
       t.value, t.input, t.gas_limit, t.gas_used, t.gas_price, t.transaction_type,
       t.max_priority_fee_per_gas, t.max_fee_per_gas, t.success, t.chain_id, t.block_hash
  FROM hot.transactions t
 WHERE t.chain_id = %(chain)s AND t.block_number BETWEEN %(first)s AND %(last)s
 ORDER BY t.block_number, t.transaction_index
) TO STDOUT (FORMAT csv);

-- name: logs
COPY (
SELECT l.block_number, l.transaction_index, l.log_index, l.transaction_hash, l.address, l.topic0,
       l.topic1, l.topic2, l.topic3, l.data, l.chain_id, l.block_hash
  FROM hot.logs l
 WHERE l.chain_id = %(chain)s AND l.block_number BETWEEN %(first)s AND %(last)s
 ORDER BY l.block_number, l.log_index
) TO STDOUT (FORMAT csv);

-- name: transfers
COPY (
SELECT t.block_number, t.block_hash, t."timestamp", t.log_index, t.transaction_hash, t.token,
       t.from_address, t.to_address, t.amount, t.action, t.decimals, t.usd_value, t.chain_id
  FROM hot.transfers t
 WHERE t.chain_id = %(chain)s AND t.block_number BETWEEN %(first)s AND %(last)s
 ORDER BY t.block_number, t.log_index
) TO STDOUT (FORMAT csv);

-- name: stake_changes
COPY (
SELECT s.block_number, s.block_hash, s."timestamp", s.log_index, s.transaction_hash,
       s.staking_contract, s.delegator, s.validator, s.amount, s.action, s.chain_id
  FROM hot.stake_changes s
 WHERE s.chain_id = %(chain)s AND s.block_number BETWEEN %(first)s AND %(last)s
 ORDER BY s.block_number, s.log_index
) TO STDOUT (FORMAT csv);
