-- Alert delivery (operators/alert_route): one row per (alert_id, kind, route), the truth for
-- what has been delivered; one row per attempt, written before the call goes out.
CREATE SCHEMA IF NOT EXISTS state;

CREATE TABLE IF NOT EXISTS state.alert_deliveries (
    delivery_id      text PRIMARY KEY,            -- sha256(alert_id, kind, route): the Idempotency-Key
    alert_id         text NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('ALERT', 'RETRACTION')),
    route            text NOT NULL,
    channel          text NOT NULL CHECK (channel IN ('webhook', 'email')),
    target           text NOT NULL,               -- webhook URL, or comma-joined recipients
    payload          jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    org_id           text NOT NULL DEFAULT 'default'
);

-- The sender's claim: due pending rows, oldest first.
CREATE INDEX IF NOT EXISTS alert_deliveries_due
    ON state.alert_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS alert_deliveries_alert ON state.alert_deliveries (alert_id);

CREATE TABLE IF NOT EXISTS state.alert_delivery_attempts (
    delivery_id  text NOT NULL REFERENCES state.alert_deliveries (delivery_id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,                     -- NULL while in flight (or the process died)
    outcome      text,                            -- ok|http_error|timeout|refused|network_error|smtp_*|...
    http_status  integer,
    error        text,
    PRIMARY KEY (delivery_id, attempt)
);
