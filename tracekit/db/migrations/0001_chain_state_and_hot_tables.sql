-- Follower state (the truth for cursors) and the reorg-correct hot tables.
CREATE SCHEMA IF NOT EXISTS state;
CREATE SCHEMA IF NOT EXISTS hot;

-- One row per chain: the last block whose event the broker confirmed, and the last head seen.
CREATE TABLE state.follower_cursor (
    chain_id       bigint PRIMARY KEY,
    block_number   bigint NOT NULL,
    block_hash     text NOT NULL,
    head_number    bigint,
    head_hash      text,
    head_seen_at   timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- The follower's window of the canonical chain it has emitted, to detect reorgs after a restart.
CREATE TABLE state.follower_window (
    chain_id      bigint NOT NULL,
    block_number  bigint NOT NULL,
    block_hash    text NOT NULL,
    parent_hash   text NOT NULL,
    PRIMARY KEY (chain_id, block_number)
);

-- Every reorg the follower emitted (its idempotency key makes re-emission harmless).
CREATE TABLE state.reorgs (
    chain_id                bigint NOT NULL,
    idempotency_key         text NOT NULL,
    common_ancestor_number  bigint NOT NULL,
    common_ancestor_hash    text NOT NULL,
    depth                   integer NOT NULL,
    orphaned_hashes         text[] NOT NULL,
    replacement_hashes      text[] NOT NULL,
    detected_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain_id, idempotency_key)
);

CREATE TABLE hot.blocks (
    chain_id          bigint NOT NULL,
    block_number      bigint NOT NULL,
    block_hash        text NOT NULL,
    parent_hash       text NOT NULL,
    "timestamp"       bigint NOT NULL,
    author            text,
    gas_used          numeric(78, 0),
    gas_limit         numeric(78, 0),
    base_fee_per_gas  numeric(78, 0),
    extra_data        text,
    tx_count          integer NOT NULL,
    log_count         integer NOT NULL,
    observed_at       timestamptz,
    inserted_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (chain_id, block_number)
);
CREATE UNIQUE INDEX blocks_hash ON hot.blocks (chain_id, block_hash);

CREATE TABLE hot.transactions (
    chain_id                  bigint NOT NULL,
    block_number              bigint NOT NULL,
    transaction_index         integer NOT NULL,
    transaction_hash          text NOT NULL,
    block_hash                text NOT NULL,
    nonce                     numeric(78, 0),
    from_address              text NOT NULL,
    to_address                text,
    value                     numeric(78, 0) NOT NULL,
    input                     text,
    gas_limit                 numeric(78, 0),
    gas_price                 numeric(78, 0),
    max_fee_per_gas           numeric(78, 0),
    max_priority_fee_per_gas  numeric(78, 0),
    gas_used                  numeric(78, 0),
    effective_gas_price       numeric(78, 0),
    success                   boolean,
    transaction_type          integer,
    contract_address          text,
    PRIMARY KEY (chain_id, block_number, transaction_index)
);
CREATE INDEX transactions_hash ON hot.transactions (chain_id, transaction_hash);

CREATE TABLE hot.logs (
    chain_id           bigint NOT NULL,
    block_number       bigint NOT NULL,
    log_index          integer NOT NULL,
    transaction_index  integer NOT NULL,
    transaction_hash   text NOT NULL,
    block_hash         text NOT NULL,
    address            text NOT NULL,
    topic0             text,
    topic1             text,
    topic2             text,
    topic3             text,
    data               text NOT NULL,
    PRIMARY KEY (chain_id, block_number, log_index)
);
CREATE INDEX logs_address_topic0 ON hot.logs (chain_id, address, topic0);
