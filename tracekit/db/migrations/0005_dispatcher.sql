-- The dispatcher's state: runs, tasks (leases, attempt fencing, retries, dead letters), the
-- events tasks emit, committed outputs, task logs, the Postgres wake-up queue and the audit log.
-- Postgres is the truth; queue messages only wake workers (payload = a task id).

-- Outbox rows may wait: a retry's wake-up is published once its backoff has passed.
ALTER TABLE state.outbox ADD COLUMN available_at timestamptz NOT NULL DEFAULT clock_timestamp();

-- A run: what a user submitted (a backfill), pinned to the DAG version it runs.
CREATE TABLE state.runs (
    run_id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id           text NOT NULL DEFAULT 'default',
    kind             text NOT NULL,
    dag              text NOT NULL,
    dag_version      integer NOT NULL,
    params           jsonb NOT NULL,
    state            text NOT NULL DEFAULT 'running'
                     CHECK (state IN ('running', 'succeeded', 'failed', 'canceling', 'canceled')),
    submitted_by     text NOT NULL,
    idempotency_key  text,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at      timestamptz
);
CREATE UNIQUE INDEX runs_idempotency ON state.runs (org_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX runs_created ON state.runs (org_id, created_at DESC);

-- One incoming event -> one task: (dag, job, event_id) is unique, so a redelivered event or a
-- re-emitted one never makes a second task.
--   attempt   the fencing token: +1 at every claim; every state change names the attempt it holds
--   failures  failed attempts and lost leases; at max_attempts the task is dead
CREATE TABLE state.tasks (
    task_id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id              text NOT NULL DEFAULT 'default',
    run_id              uuid NOT NULL REFERENCES state.runs ON DELETE CASCADE,
    dag                 text NOT NULL,
    dag_version         integer NOT NULL,
    job                 text NOT NULL,
    operator            text NOT NULL,
    event_id            text NOT NULL,
    payload             jsonb NOT NULL,
    reads               text[] NOT NULL DEFAULT '{}',
    writes              text[] NOT NULL DEFAULT '{}',
    state               text NOT NULL DEFAULT 'queued'
                        CHECK (state IN ('queued', 'leased', 'succeeded', 'dead', 'canceled')),
    attempt             integer NOT NULL DEFAULT 0,
    failures            integer NOT NULL DEFAULT 0,
    max_attempts        integer NOT NULL CHECK (max_attempts >= 1),
    backoff_initial_ms  integer NOT NULL DEFAULT 1000,
    backoff_max_ms      integer NOT NULL DEFAULT 60000,
    backoff_multiplier  double precision NOT NULL DEFAULT 2.0,
    concurrency_key     text,
    max_concurrency     integer CHECK (max_concurrency IS NULL OR max_concurrency >= 1),
    not_before          timestamptz NOT NULL DEFAULT clock_timestamp(),
    lease_owner         text,
    lease_expires_at    timestamptz,
    heartbeat_at        timestamptz,
    cancel_requested    boolean NOT NULL DEFAULT false,
    last_error          text,
    last_traceback      text,
    created_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at          timestamptz,
    finished_at         timestamptz,
    UNIQUE (org_id, dag, job, event_id)
);
CREATE INDEX tasks_ready ON state.tasks (not_before) WHERE state = 'queued';
CREATE INDEX tasks_leased ON state.tasks (lease_expires_at) WHERE state = 'leased';
CREATE INDEX tasks_concurrency ON state.tasks (concurrency_key) WHERE state = 'leased';
CREATE INDEX tasks_run ON state.tasks (run_id, state);

-- Every attempt, with how it ended (the task keeps only the last error).
CREATE TABLE state.task_attempts (
    task_id      uuid NOT NULL REFERENCES state.tasks ON DELETE CASCADE,
    attempt      integer NOT NULL,
    worker       text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at  timestamptz,
    outcome      text,
    error        text,
    traceback    text,
    PRIMARY KEY (task_id, attempt)
);

-- Log lines a worker sends with its heartbeats and its completion.
CREATE TABLE state.task_logs (
    id        bigserial PRIMARY KEY,
    task_id   uuid NOT NULL REFERENCES state.tasks ON DELETE CASCADE,
    attempt   integer NOT NULL,
    at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    level     text NOT NULL,
    message   text NOT NULL
);
CREATE INDEX task_logs_task ON state.task_logs (task_id, id);

-- Events tasks emit. event_id = producer task / dataset / partition key: a retry re-emitting the
-- same partition is a no-op.
CREATE TABLE state.task_events (
    event_id          text PRIMARY KEY,
    org_id            text NOT NULL DEFAULT 'default',
    run_id            uuid NOT NULL REFERENCES state.runs ON DELETE CASCADE,
    producer_task_id  uuid NOT NULL REFERENCES state.tasks ON DELETE CASCADE,
    attempt           integer NOT NULL,
    dataset_id        text NOT NULL,
    partition_key     text NOT NULL,
    payload           jsonb NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Outputs of the attempt that committed (staged files; the only ones readers may use).
CREATE TABLE state.task_outputs (
    task_id     uuid NOT NULL REFERENCES state.tasks ON DELETE CASCADE,
    org_id      text NOT NULL DEFAULT 'default',
    run_id      uuid NOT NULL REFERENCES state.runs ON DELETE CASCADE,
    attempt     integer NOT NULL,
    dataset_id  text NOT NULL,
    uri         text NOT NULL,
    rows        bigint NOT NULL,
    bytes       bigint NOT NULL,
    block_start bigint,
    block_end   bigint,
    committed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (task_id, dataset_id, uri)
);
CREATE INDEX task_outputs_run ON state.task_outputs (run_id, dataset_id);

-- The Postgres queue driver: one row per message, visible again after a visibility timeout
-- unless acknowledged; poison messages move to queue_dead after max_attempts receives.
CREATE TABLE state.queue_messages (
    id            bigserial PRIMARY KEY,
    queue         text NOT NULL,
    body          bytea NOT NULL,
    receives      integer NOT NULL DEFAULT 0,
    visible_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    enqueued_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_error    text
);
CREATE INDEX queue_messages_visible ON state.queue_messages (queue, visible_at, id);

CREATE TABLE state.queue_dead (
    id            bigint PRIMARY KEY,
    queue         text NOT NULL,
    body          bytea NOT NULL,
    receives      integer NOT NULL,
    last_error    text,
    enqueued_at   timestamptz NOT NULL,
    died_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Every API call: who, what, when, and how it ended.
CREATE TABLE state.audit_log (
    id          bigserial PRIMARY KEY,
    org_id      text NOT NULL DEFAULT 'default',
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       text NOT NULL,
    method      text NOT NULL,
    path        text NOT NULL,
    query       text NOT NULL DEFAULT '',
    status      integer NOT NULL,
    client      text,
    request_id  text NOT NULL,
    duration_ms double precision NOT NULL
);
CREATE INDEX audit_log_at ON state.audit_log (org_id, at DESC);

-- org_id on the user-facing tables of earlier migrations.
ALTER TABLE state.reorgs ADD COLUMN IF NOT EXISTS org_id text NOT NULL DEFAULT 'default';
ALTER TABLE state.alert_delivery_attempts ADD COLUMN IF NOT EXISTS org_id text NOT NULL DEFAULT 'default';
ALTER TABLE state.historical_alerts ADD COLUMN IF NOT EXISTS org_id text NOT NULL DEFAULT 'default';
