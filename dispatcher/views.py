"""Read-only views of runs and tasks for the API and the CLI (one query each, no locks)."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from dispatcher.store import NotFound

_RUN = """
SELECT r.run_id, r.org_id, r.kind, r.dag, r.dag_version, r.state, r.params, r.submitted_by, r.created_at,
       r.finished_at,
       coalesce((SELECT jsonb_object_agg(state, n) FROM (
                   SELECT state, count(*) AS n FROM state.tasks WHERE run_id = r.run_id GROUP BY state) s),
                '{}') AS tasks,
       (SELECT count(*) FROM state.tasks t WHERE t.run_id = r.run_id AND t.job = 'ingest'
          AND t.state = 'succeeded') AS chunks_done,
       (SELECT coalesce(sum((t.payload->'event'->>'end')::bigint
                            - (t.payload->'event'->>'start')::bigint + 1), 0)
          FROM state.tasks t WHERE t.run_id = r.run_id AND t.job = 'ingest' AND t.state = 'succeeded'
        ) AS blocks_done,
       coalesce((SELECT jsonb_object_agg(dataset_id, n) FROM (
                   SELECT dataset_id, sum(rows) AS n FROM state.task_outputs WHERE run_id = r.run_id
                   GROUP BY dataset_id) o), '{}') AS rows,
       (SELECT count(*) FROM state.task_outputs WHERE run_id = r.run_id) AS files,
       coalesce((SELECT jsonb_agg(e) FROM (
                   SELECT jsonb_build_object('task_id', task_id, 'job', job, 'state', state,
                                             'failures', failures, 'error', last_error) AS e
                   FROM state.tasks WHERE run_id = r.run_id AND last_error IS NOT NULL
                     AND state IN ('dead', 'queued', 'leased')
                   ORDER BY (state = 'dead') DESC, created_at LIMIT 5) x), '[]') AS errors
FROM state.runs r
"""


def _run(row: dict[str, Any]) -> dict[str, Any]:
    params = row["params"]
    chunks_total = int(params.get("chunks", 0))
    blocks_total = int(params.get("end_block", -1)) - int(params.get("start_block", 0)) + 1
    blocks_done = int(row.pop("blocks_done"))
    row["progress"] = {
        "tasks": row.pop("tasks"),
        "chunks_total": chunks_total,
        "chunks_done": int(row.pop("chunks_done")),
        "blocks_total": max(blocks_total, 0),
        "blocks_done": blocks_done,
        "rows": {k: int(v) for k, v in row.pop("rows").items()},
        "files": int(row.pop("files")),
        "fraction": 1.0 if row["state"] == "succeeded" else (
            round(blocks_done / blocks_total, 4) if blocks_total > 0 else 0.0),
    }
    return row


class Views:
    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool

    async def run(self, org_id: str, run_id: uuid.UUID) -> dict[str, Any]:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_RUN + " WHERE r.org_id = %s AND r.run_id = %s", (org_id, run_id))
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no run {run_id}")
        return _run(row)

    async def runs(self, org_id: str, *, state: str | None, limit: int) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                _RUN + " WHERE r.org_id = %s AND (%s::text IS NULL OR r.state = %s)"
                " ORDER BY r.created_at DESC LIMIT %s", (org_id, state, state, limit))
            return [_run(r) for r in await cur.fetchall()]

    async def tasks(self, org_id: str, run_id: uuid.UUID, *, state: str | None, limit: int,
                    offset: int) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("SELECT 1 FROM state.runs WHERE org_id = %s AND run_id = %s", (org_id, run_id))
            if await cur.fetchone() is None:
                raise NotFound(f"no run {run_id}")
            await cur.execute(
                "SELECT task_id, run_id, job, operator, state, attempt, failures, payload->>'partition_key'"
                " AS partition, last_error, created_at, finished_at FROM state.tasks"
                " WHERE run_id = %s AND (%s::text IS NULL OR state = %s)"
                " ORDER BY created_at, task_id LIMIT %s OFFSET %s",
                (run_id, state, state, limit, offset))
            return list(await cur.fetchall())

    async def task(self, org_id: str, task_id: uuid.UUID) -> dict[str, Any]:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "SELECT task_id, run_id, job, operator, state, attempt, failures,"
                " payload->>'partition_key' AS partition, last_error, created_at, finished_at, payload,"
                " reads,"
                " writes, max_attempts, lease_owner, lease_expires_at, cancel_requested, last_traceback"
                " FROM state.tasks WHERE org_id = %s AND task_id = %s", (org_id, task_id))
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"no task {task_id}")
            await cur.execute(
                "SELECT attempt, worker, started_at, finished_at, outcome, error, traceback"
                " FROM state.task_attempts WHERE task_id = %s ORDER BY attempt", (task_id,))
            row["attempts"] = await cur.fetchall()
            await cur.execute(
                "SELECT level, message, attempt, at FROM (SELECT * FROM state.task_logs WHERE task_id = %s"
                " ORDER BY id DESC LIMIT 500) l ORDER BY id", (task_id,))
            row["logs"] = await cur.fetchall()
            await cur.execute(
                "SELECT dataset_id, uri, rows, bytes, block_start, block_end, attempt FROM state.task_outputs"
                " WHERE task_id = %s ORDER BY dataset_id, uri", (task_id,))
            row["outputs"] = await cur.fetchall()
            return dict(row)

    async def outputs(self, org_id: str, run_id: uuid.UUID) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                "SELECT dataset_id, uri, rows, bytes, block_start, block_end, attempt FROM state.task_outputs"
                " WHERE org_id = %s AND run_id = %s ORDER BY dataset_id, block_start, uri", (org_id, run_id))
            return list(await cur.fetchall())
