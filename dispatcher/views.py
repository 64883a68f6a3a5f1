"""Read-only views of runs and tasks for the API and the CLI (one query each, no locks; the SQL is
in ``dispatcher/sql/views.sql``)."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from dispatcher.errors import NotFound
from tracekit.db.queries import load_queries

_SQL = load_queries("dispatcher.sql", "views.sql")


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
            await cur.execute(_SQL.sql("runs"), {"org": org_id, "run": run_id, "state": None, "limit": 1})
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no run {run_id}")
        return _run(row)

    async def runs(self, org_id: str, *, state: str | None, limit: int) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_SQL.sql("runs"), {"org": org_id, "run": None, "state": state, "limit": limit})
            return [_run(r) for r in await cur.fetchall()]

    async def tasks(self, org_id: str, run_id: uuid.UUID, *, state: str | None, limit: int,
                    offset: int) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_SQL.sql("run_exists"), (org_id, run_id))
            if await cur.fetchone() is None:
                raise NotFound(f"no run {run_id}")
            await cur.execute(_SQL.sql("run_tasks"), (run_id, state, state, limit, offset))
            return list(await cur.fetchall())

    async def task(self, org_id: str, task_id: uuid.UUID) -> dict[str, Any]:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_SQL.sql("task"), (org_id, task_id))
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"no task {task_id}")
            await cur.execute(_SQL.sql("task_attempts"), (task_id,))
            row["attempts"] = await cur.fetchall()
            await cur.execute(_SQL.sql("task_logs"), (task_id,))
            row["logs"] = await cur.fetchall()
            await cur.execute(_SQL.sql("task_outputs"), (task_id,))
            row["outputs"] = await cur.fetchall()
            return dict(row)

    async def outputs(self, org_id: str, run_id: uuid.UUID) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_SQL.sql("run_outputs"), (org_id, run_id))
            return list(await cur.fetchall())
