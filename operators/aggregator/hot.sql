-- The Aggregator's reads of the hot tables (migrations 0001, 0008): one batch of blocks, only the
-- rows of the canonical block at each height (the block hash hot.blocks holds), in each dataset's
-- sort order. Run in one REPEATABLE READ transaction: every table is read at the same moment.
-- Parameters: chain, first, last (inclusive).

-- name: head
SELECT max(block_number) AS head FROM hot.blocks WHERE chain_id = %(chain)s;

-- name: blocks
SELECT block_number, block_hash, parent_hash, author, gas_used, extra_data, "timestamp",
       base_fee_per_gas, tx_count, chain_id, log_count
  FROM hot.blocks
 WHERE chain_id = %(chain)s AND block_number BETWEEN %(first)s AND %(last)s
 ORDER BY block_number;

-- name: transactions
SELECT t.block_number, t.transaction_index, t.transaction_hash, t.nonce, t.from_address, t.to_address,
       t.value, t.input, t.gas_limit, t.gas_used, t.gas_price, t.transaction_type,
       t.max_priority_fee_per_gas, t.max_fee_per_gas, t.success, t.chain_id
  FROM hot.transactions t
  JOIN hot.blocks b ON b.chain_id = t.chain_id AND b.block_number = t.block_number
                   AND b.block_hash = t.block_hash
 WHERE t.chain_id = %(chain)s AND t.block_number BETWEEN %(first)s AND %(last)s
 ORDER BY t.block_number, t.transaction_index;

-- name: logs
SELECT l.block_number, l.transaction_index, l.log_index, l.transaction_hash, l.address, l.topic0,
       l.topic1, l.topic2, l.topic3, l.data, l.chain_id
  FROM hot.logs l
  JOIN hot.blocks b ON b.chain_id = l.chain_id AND b.block_number = l.block_number
                   AND b.block_hash = l.block_hash
 WHERE l.chain_id = %(chain)s AND l.block_number BETWEEN %(first)s AND %(last)s
 ORDER BY l.block_number, l.log_index;

-- name: transfers
SELECT t.block_number, t.block_hash, t."timestamp", t.log_index, t.transaction_hash, t.token,
       t.from_address, t.to_address, t.amount, t.action, t.decimals, t.usd_value, t.chain_id
  FROM hot.transfers t
  JOIN hot.blocks b ON b.chain_id = t.chain_id AND b.block_number = t.block_number
                   AND b.block_hash = t.block_hash
 WHERE t.chain_id = %(chain)s AND t.block_number BETWEEN %(first)s AND %(last)s
 ORDER BY t.block_number, t.log_index;

-- name: stake_changes
SELECT s.block_number, s.block_hash, s."timestamp", s.log_index, s.transaction_hash,
       s.staking_contract, s.delegator, s.validator, s.amount, s.action, s.chain_id
  FROM hot.stake_changes s
  JOIN hot.blocks b ON b.chain_id = s.chain_id AND b.block_number = s.block_number
                   AND b.block_hash = s.block_hash
 WHERE s.chain_id = %(chain)s AND s.block_number BETWEEN %(first)s AND %(last)s
 ORDER BY s.block_number, s.log_index;
