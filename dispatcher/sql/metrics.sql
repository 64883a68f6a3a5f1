-- Named queries of the dispatcher's gauges (dispatcher/metrics.py), read at each refresh.

-- name: task_states
SELECT state, count(*) AS n FROM state.tasks WHERE org_id = %(org)s GROUP BY state;

-- name: queue_depth
-- Wake-ups waiting in the Postgres queue driver's table (0 with the Kafka driver).
SELECT queue, count(*) AS n FROM state.queue_messages GROUP BY queue;

-- name: outbox_backlog
SELECT count(*) AS n, coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0) AS oldest_s
  FROM state.outbox WHERE published_at IS NULL;

-- name: run_commits
SELECT state, count(*) AS n FROM state.run_commits WHERE org_id = %(org)s GROUP BY state;
