-- Enriched transfers and stake changes, reorg-correct (streams/transfer_sink: `trace transfer-sink run`).
-- Columns are the fields of the Avro records trace.enrich.Transfer / trace.enrich.StakeChange
-- (schemas/avro/transfer.avsc, stake_change.avsc), same names. A row belongs to the block
-- block_hash: a reorg deletes the orphaned blocks' rows by hash, a replaced height's rows by
-- differing hash.

CREATE TABLE hot.transfers (
    chain_id          bigint NOT NULL,
    block_number      bigint NOT NULL,
    block_hash        text NOT NULL,
    "timestamp"       bigint NOT NULL,
    log_index         integer NOT NULL,
    transaction_hash  text NOT NULL,
    token             text NOT NULL,
    from_address      text NOT NULL,
    to_address        text NOT NULL,
    amount            numeric(78, 0) NOT NULL,
    action            text NOT NULL,
    decimals          integer,
    usd_value         numeric,
    from_labels       text[] NOT NULL DEFAULT '{}',
    to_labels         text[] NOT NULL DEFAULT '{}',
    idempotency_key   text NOT NULL,
    PRIMARY KEY (chain_id, block_number, log_index)
);
-- block ranges: the primary key; one token's (or one party's) transfers over a block range:
CREATE INDEX transfers_token_block ON hot.transfers (chain_id, token, block_number);
CREATE INDEX transfers_from_block ON hot.transfers (chain_id, from_address, block_number);
CREATE INDEX transfers_to_block ON hot.transfers (chain_id, to_address, block_number);

CREATE TABLE hot.stake_changes (
    chain_id          bigint NOT NULL,
    block_number      bigint NOT NULL,
    block_hash        text NOT NULL,
    "timestamp"       bigint NOT NULL,
    log_index         integer NOT NULL,
    transaction_hash  text NOT NULL,
    staking_contract  text NOT NULL,
    delegator         text NOT NULL,
    validator         text NOT NULL,
    amount            numeric(78, 0) NOT NULL,
    action            text NOT NULL,
    delegator_labels  text[] NOT NULL DEFAULT '{}',
    validator_labels  text[] NOT NULL DEFAULT '{}',
    idempotency_key   text NOT NULL,
    PRIMARY KEY (chain_id, block_number, log_index)
);
CREATE INDEX stake_changes_validator_block ON hot.stake_changes (chain_id, validator, block_number);
CREATE INDEX stake_changes_delegator_block ON hot.stake_changes (chain_id, delegator, block_number);
