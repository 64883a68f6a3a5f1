-- Address labels (per organisation) and token USD prices, for the enrichment stage.
CREATE SCHEMA IF NOT EXISTS state;
CREATE SCHEMA IF NOT EXISTS hot;

-- Addresses are lower-case 0x-prefixed hex; one row per (org, address, label).
CREATE TABLE state.address_labels (
    org_id      text NOT NULL DEFAULT 'default',
    address     text NOT NULL CHECK (address ~ '^0x[0-9a-f]{40}$'),
    label       text NOT NULL CHECK (length(label) BETWEEN 1 AND 200),
    source      text NOT NULL DEFAULT 'cli',
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, address, label)
);

-- Every change notifies channel trace_labels with the org id as payload; Postgres folds
-- identical notifications of one transaction into one, so a bulk import notifies once per org.
CREATE FUNCTION state.notify_address_labels() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('trace_labels', OLD.org_id);
    ELSE
        PERFORM pg_notify('trace_labels', NEW.org_id);
        IF TG_OP = 'UPDATE' AND OLD.org_id IS DISTINCT FROM NEW.org_id THEN
            PERFORM pg_notify('trace_labels', OLD.org_id);
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER address_labels_notify
    AFTER INSERT OR UPDATE OR DELETE ON state.address_labels
    FOR EACH ROW EXECUTE FUNCTION state.notify_address_labels();

-- TRUNCATE has no rows: notify every listener with an empty payload ("reload whatever you hold").
CREATE FUNCTION state.notify_address_labels_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('trace_labels', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER address_labels_notify_truncate
    AFTER TRUNCATE ON state.address_labels
    FOR EACH STATEMENT EXECUTE FUNCTION state.notify_address_labels_truncate();

-- USD price points: token is the lower-case token address, ts unix seconds. Upserts are idempotent.
CREATE TABLE hot.prices (
    token       text NOT NULL CHECK (token ~ '^0x[0-9a-f]{40}$'),
    ts          bigint NOT NULL,
    usd         numeric NOT NULL CHECK (usd >= 0),
    symbol      text,
    source      text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (token, ts)
);
