-- The query service (dispatcher/query/engine.py): what a query pins, read in ONE read-only
-- REPEATABLE READ transaction with the hot rows (operators/aggregator/hot.sql), and the org's own
-- rows of the state views.

-- name: derived_datasets
SELECT dataset_id FROM state.datasets WHERE org_id = %(org)s AND kind = 'derived';

-- name: newest_set
SELECT seq, pointers, watermarks FROM state.dataset_pointer_sets
 WHERE org_id = %(org)s ORDER BY seq DESC LIMIT 1;

-- name: set_at
SELECT seq, pointers, watermarks FROM state.dataset_pointer_sets WHERE org_id = %(org)s AND seq = %(seq)s;

-- name: versions
SELECT v.dataset_id, v.version, v.snapshot_id, d.table_name, d.kind
  FROM unnest(%(datasets)s::text[], %(versions)s::bigint[]) AS a(dataset_id, version)
  JOIN state.dataset_versions v ON v.org_id = %(org)s AND (v.dataset_id, v.version) = (a.dataset_id, a.version)
  JOIN state.datasets d ON (d.org_id, d.dataset_id) = (v.org_id, v.dataset_id);

-- name: prices
SELECT token, ts, usd::float8 AS usd, symbol, source FROM hot.prices;

-- name: labels
SELECT address, label, source FROM state.address_labels WHERE org_id = %(org)s;

-- name: alerts
SELECT alert_id, rule_id, rule_version, tier, severity, chain_id, block_number, block_hash, event_type,
       summary, fired_at, retracted_at
  FROM state.alerts WHERE org_id = %(org)s;

-- name: log
INSERT INTO state.query_log (org_id, actor, door, sql, status, error, pointer_set, versions, datasets, rows,
                             truncated, duration_ms)
VALUES (%(org)s, %(actor)s, %(door)s, %(sql)s, %(status)s, %(error)s, %(pointer_set)s, %(versions)s,
        %(datasets)s, %(rows)s, %(truncated)s, %(ms)s);

-- name: catalog_datasets
SELECT dataset_id, kind, table_name, description FROM state.datasets WHERE org_id = %(org)s;

-- name: chain_head
-- The newest head the follower saw of the chain (its cursor), for freshness.
SELECT coalesce(head_number, block_number) AS head FROM state.follower_cursor WHERE chain_id = %(chain)s;
