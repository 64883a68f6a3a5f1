-- Named queries of tasks (state.tasks, state.task_attempts, state.task_outputs, state.task_logs;
-- migration 0005): creation, claims and leases, completion, the reaper.
-- Used by dispatcher/runs.py, dispatcher/claims.py and dispatcher/store.py.

-- name: insert_tasks
-- A task per (job, event); one already made for that event is skipped. Columns come as arrays.
INSERT INTO state.tasks (org_id, run_id, dag, dag_version, job, operator, event_id, payload,
    reads, writes, max_attempts, backoff_initial_ms, backoff_max_ms, backoff_multiplier,
    concurrency_key, max_concurrency)
SELECT %s, %s, %s, %s, job, operator, event_id, payload,
       ARRAY(SELECT jsonb_array_elements_text(reads)),
       ARRAY(SELECT jsonb_array_elements_text(writes)),
       max_attempts, b_init, b_max, b_mult, ckey, cmax
FROM unnest(%s::text[], %s::text[], %s::text[], %s::jsonb[], %s::jsonb[], %s::jsonb[], %s::int[],
            %s::int[], %s::int[], %s::float8[], %s::text[], %s::int[])
     AS t(job, operator, event_id, payload, reads, writes, max_attempts, b_init, b_max, b_mult,
          ckey, cmax)
ON CONFLICT (org_id, dag, job, event_id) DO NOTHING
RETURNING task_id;

-- name: lock_tasks
-- What fencing and completion decide on, with the time of the lock.
SELECT task_id, state, attempt, lease_expires_at, cancel_requested, failures, max_attempts,
       backoff_initial_ms, backoff_max_ms, backoff_multiplier, run_id, org_id, dag, dag_version,
       job, writes, clock_timestamp() AS now
FROM state.tasks WHERE task_id = ANY(%b::uuid[]) ORDER BY task_id FOR UPDATE;

-- name: saturated_jobs
-- Jobs at their max_concurrency now: their queued tasks are not candidates (else a long backfill
-- at its cap would fill every claim with tasks that cannot run and starve the other jobs).
SELECT concurrency_key FROM state.tasks WHERE state = 'leased' AND concurrency_key IS NOT NULL
GROUP BY concurrency_key HAVING count(*) >= min(max_concurrency);

-- name: claim_preferred
-- Candidates for a claim among the woken tasks. Two statements (this and claim_ready) rather than
-- one ORDER BY (task_id = ANY(prefer)): that sort key cannot use the tasks_ready index, so every
-- claim sorted all queued tasks.
SELECT task_id, concurrency_key, max_concurrency FROM state.tasks
WHERE state = 'queued' AND not_before <= clock_timestamp() AND task_id = ANY(%(prefer)s::uuid[])
  AND (concurrency_key IS NULL OR concurrency_key <> ALL(%(full)s::text[]))
  AND (%(ops)s::text[] IS NULL OR operator = ANY(%(ops)s::text[]))
  AND (%(org)s::text IS NULL OR org_id = %(org)s::text)
ORDER BY not_before, created_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED;

-- name: claim_ready
-- Candidates for a claim: the oldest ready tasks.
SELECT task_id, concurrency_key, max_concurrency FROM state.tasks
WHERE state = 'queued' AND not_before <= clock_timestamp()
  AND (%(ops)s::text[] IS NULL OR operator = ANY(%(ops)s::text[]))
  AND (%(org)s::text IS NULL OR org_id = %(org)s::text)
  AND task_id <> ALL(%(taken)s::uuid[])  -- locked by this transaction: SKIP LOCKED keeps them
  AND (concurrency_key IS NULL OR concurrency_key <> ALL(%(full)s::text[]))
ORDER BY not_before, created_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED;

-- name: lock_concurrency_key
-- One claimer per job at a time (its max_concurrency is counted under this lock).
SELECT pg_advisory_xact_lock(hashtextextended(%s, 0));

-- name: count_leased
SELECT count(*) AS n FROM state.tasks WHERE concurrency_key = %s AND state = 'leased';

-- name: lease
-- The chosen tasks: a new attempt each, leased to the worker, with its attempt row.
WITH leased AS (
    UPDATE state.tasks SET state = 'leased', attempt = attempt + 1, lease_owner = %(worker)s,
        lease_expires_at = clock_timestamp() + %(lease)s, heartbeat_at = clock_timestamp(),
        started_at = coalesce(started_at, clock_timestamp())
    WHERE task_id = ANY(%(ids)b::uuid[])
    RETURNING task_id, org_id, run_id, dag, job, operator, attempt, payload, reads, writes,
              lease_expires_at
), attempts AS (
    INSERT INTO state.task_attempts (task_id, attempt, worker)
    SELECT task_id, attempt, %(worker)s FROM leased
)
SELECT * FROM leased;

-- name: renew_lease
UPDATE state.tasks SET heartbeat_at = clock_timestamp(), lease_expires_at = clock_timestamp() + %s
 WHERE task_id = %s RETURNING lease_expires_at;

-- name: insert_logs
INSERT INTO state.task_logs (task_id, attempt, level, message)
SELECT %s, %s, unnest(%s::text[]), unnest(%s::text[]);

-- name: expired_leases
SELECT task_id FROM state.tasks WHERE state = 'leased' AND lease_expires_at <= clock_timestamp()
 ORDER BY lease_expires_at LIMIT %s FOR UPDATE SKIP LOCKED;

-- name: finish
-- Tasks reaching a terminal state (succeeded, dead, canceled); a dead one counts its failure.
UPDATE state.tasks t SET state = x.state, finished_at = clock_timestamp(), lease_owner = NULL,
    lease_expires_at = NULL, failures = t.failures + (x.state = 'dead')::int,
    last_error = coalesce(x.error, t.last_error),
    last_traceback = coalesce(x.tb, t.last_traceback)
FROM unnest(%b::uuid[], %b::text[], %b::text[], %b::text[]) AS x(task_id, state, error, tb)
WHERE t.task_id = x.task_id;

-- name: retry
-- Failed tasks queued again after their backoff (in seconds).
UPDATE state.tasks t SET state = 'queued', failures = t.failures + 1, lease_owner = NULL,
    lease_expires_at = NULL, not_before = clock_timestamp() + make_interval(secs => x.delay),
    last_error = x.error, last_traceback = x.tb
FROM unnest(%b::uuid[], %b::float8[], %b::text[], %b::text[]) AS x(task_id, delay, error, tb)
WHERE t.task_id = x.task_id;

-- name: release
-- Tasks handed back (graceful shutdown): queued again at once, no failure counted.
UPDATE state.tasks SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL,
    not_before = clock_timestamp() WHERE task_id = ANY(%s);

-- name: insert_outputs
INSERT INTO state.task_outputs (task_id, org_id, run_id, attempt, dataset_id, uri, rows,
                                bytes, block_start, block_end, sha256, metadata)
SELECT * FROM unnest(%s::uuid[], %s::text[], %s::uuid[], %s::int[], %s::text[],
                     %s::text[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::text[],
                     %s::jsonb[])
ON CONFLICT DO NOTHING;

-- name: close_attempts
UPDATE state.task_attempts a SET finished_at = clock_timestamp(), outcome = x.outcome,
    error = x.error, traceback = x.tb
FROM unnest(%b::uuid[], %b::int[], %b::text[], %b::text[], %b::text[])
     AS x(task_id, attempt, outcome, error, tb)
WHERE a.task_id = x.task_id AND a.attempt = x.attempt;
