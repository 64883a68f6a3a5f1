-- The state of stateful triggers (cron, interval, all, any) of active DAG versions: one row per
-- job and top-level trigger. `fired` counts firings (the tasks' event ids are built from it);
-- `due_at` is when the next clock tick could make the trigger fire (NULL: only a signal can).
-- Rows of versions that are no longer active are deleted by the scheduler.
CREATE TABLE state.trigger_state (
    org_id         text NOT NULL DEFAULT 'default',
    dag            text NOT NULL,
    version        integer NOT NULL,
    job            text NOT NULL,
    trigger_index  integer NOT NULL,
    state          jsonb NOT NULL,
    fired          bigint NOT NULL DEFAULT 0,
    due_at         timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (org_id, dag, version, job, trigger_index),
    FOREIGN KEY (org_id, dag, version) REFERENCES state.dag_versions ON DELETE CASCADE
);
CREATE INDEX trigger_state_due ON state.trigger_state (due_at) WHERE due_at IS NOT NULL;

-- External events received (POST /v1/events): an event sent again with its name and key is
-- recognised and changes nothing.
CREATE TABLE state.external_events (
    org_id         text NOT NULL DEFAULT 'default',
    name           text NOT NULL,
    key            text NOT NULL,
    payload        jsonb NOT NULL,
    received_from  text NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (org_id, name, key)
);
