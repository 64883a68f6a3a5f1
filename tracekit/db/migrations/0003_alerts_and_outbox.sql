-- Alert rules (versioned rule sets), fired alerts, finalized-tier alerts waiting for finality,
-- historical evaluation runs, and the transactional outbox.

CREATE TABLE state.alert_rule_sets (
    org_id      text NOT NULL DEFAULT 'default',
    version     integer NOT NULL,
    digest      text NOT NULL,
    rules       jsonb NOT NULL,
    sources     text[] NOT NULL,
    active      boolean NOT NULL DEFAULT false,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, version)
);
CREATE UNIQUE INDEX alert_rule_sets_one_active ON state.alert_rule_sets (org_id) WHERE active;

-- One row per alert id (rule version + triggering event key): redelivery cannot make a second.
CREATE TABLE state.alerts (
    alert_id        text PRIMARY KEY,
    org_id          text NOT NULL DEFAULT 'default',
    rule_id         text NOT NULL,
    rule_version    integer NOT NULL,
    tier            text NOT NULL,
    severity        text NOT NULL,
    chain_id        bigint NOT NULL,
    block_number    bigint NOT NULL,
    block_hash      text NOT NULL,
    event_key       text NOT NULL,
    event_type      text NOT NULL,
    summary         text NOT NULL,
    details         jsonb NOT NULL,
    observed_at     timestamptz,
    fired_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    retracted_at    timestamptz
);
CREATE INDEX alerts_block_hash ON state.alerts (chain_id, block_hash) WHERE retracted_at IS NULL;

-- Finalized-tier matches wait here until their block is past the finality depth; a reorg
-- deletes those of orphaned blocks, so they never fire.
CREATE TABLE state.pending_alerts (
    alert_id      text PRIMARY KEY,
    chain_id      bigint NOT NULL,
    block_number  bigint NOT NULL,
    block_hash    text NOT NULL,
    record        jsonb NOT NULL
);
CREATE INDEX pending_alerts_block ON state.pending_alerts (chain_id, block_number);

-- Where each chain's alert evaluation has got to (the last block it applied).
CREATE TABLE state.alert_progress (
    chain_id      bigint PRIMARY KEY,
    block_number  bigint NOT NULL,
    block_hash    text NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Historical evaluation: a labelled run over a past range; never delivered.
CREATE TABLE state.alert_runs (
    run_id        text PRIMARY KEY,
    org_id        text NOT NULL DEFAULT 'default',
    label         text NOT NULL,
    chain_id      bigint NOT NULL,
    from_block    bigint NOT NULL,
    to_block      bigint NOT NULL,
    rule_version  integer NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    alerts        integer
);
CREATE TABLE state.historical_alerts (
    run_id        text NOT NULL REFERENCES state.alert_runs ON DELETE CASCADE,
    alert_id      text NOT NULL,
    rule_id       text NOT NULL,
    tier          text NOT NULL,
    block_number  bigint NOT NULL,
    block_hash    text NOT NULL,
    event_key     text NOT NULL,
    summary       text NOT NULL,
    details       jsonb NOT NULL,
    PRIMARY KEY (run_id, alert_id)
);

-- The transactional outbox: a side effect is a row written in the same transaction as the
-- intent; the publisher sends it and marks it. Re-publishing after a crash is harmless: every
-- payload carries its idempotency key.
CREATE TABLE state.outbox (
    id            bigserial PRIMARY KEY,
    destination   text NOT NULL,
    key           bytea,
    payload       bytea NOT NULL,
    headers       jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at  timestamptz
);
CREATE INDEX outbox_unpublished ON state.outbox (id) WHERE published_at IS NULL;
