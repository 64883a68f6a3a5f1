-- The query service's audit (docs/query.md): every query, whichever door it came through (the API,
-- `trace query`, a query job), with who asked, what it read (the pointer set, the datasets and
-- their versions), what came back and how long it took; refused and failed ones with the reason.
CREATE TABLE state.query_log (
    id            bigserial PRIMARY KEY,
    org_id        text NOT NULL,
    at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor         text NOT NULL,
    door          text NOT NULL,                  -- api, cli, job
    sql           text NOT NULL,                  -- as sent (at most 20,000 characters)
    status        text NOT NULL CHECK (status IN ('ok', 'refused', 'failed', 'timeout')),
    error         text,
    pointer_set   bigint,
    versions      jsonb NOT NULL DEFAULT '{}',    -- dataset -> version read
    datasets      text[] NOT NULL DEFAULT '{}',   -- the views it read
    rows          bigint,
    truncated     boolean NOT NULL DEFAULT false,
    duration_ms   double precision NOT NULL
);
CREATE INDEX query_log_at ON state.query_log (org_id, at DESC);
