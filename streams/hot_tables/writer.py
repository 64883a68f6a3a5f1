"""Postgres adapter of the hot-table sinks: idempotent, reorg-aware batched writes.

A batch's operations are applied in one transaction. A run is COPYed into session staging tables
(``stage_<table>``, like the hot table; ``stage_heights``, the run's blocks), then: rows at the
run's heights with a *different* block hash are deleted (a replay of an older branch, or a
replacement whose reorg was never seen or already applied), and the staged rows are inserted with
``ON CONFLICT DO NOTHING`` (a redelivered record changes nothing). A reorg deletes the orphaned
heights' rows by hash, so replaying an old reorg never removes the branch that replaced it.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from streams.hot_tables.plan import (
    ApplyReorg,
    Op,
    TableSet,
    WriteRun,
    reorg_targets,
    run_heights,
    staged_rows,
)

HEIGHTS = "heights"  # stage_heights: the blocks of the run being written


def _stage(table: str) -> sql.Identifier:
    return sql.Identifier(f"stage_{table}")


class HotTableWriter:
    """Writes one :class:`TableSet`; one connection, so one writer per concurrent agent."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], tables: TableSet) -> None:
        self.conn = conn
        self.tables = tables

    @classmethod
    async def connect(cls, url: str, tables: TableSet) -> HotTableWriter:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        await conn.execute(
            sql.SQL(
                "CREATE TEMP TABLE IF NOT EXISTS {} (chain_id bigint, block_number bigint, block_hash text)"
                " ON COMMIT DELETE ROWS"
            ).format(_stage(HEIGHTS))
        )
        for table in tables.tables:
            await conn.execute(
                sql.SQL(
                    "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE hot.{} INCLUDING DEFAULTS)"
                    " ON COMMIT DELETE ROWS"
                ).format(_stage(table.name), sql.Identifier(table.name))
            )
        return cls(conn, tables)

    async def close(self) -> None:
        await self.conn.close()

    async def apply(self, ops: list[Op]) -> None:
        """Apply ``ops`` in order, all in one transaction."""
        async with self.conn.transaction():
            for op in ops:
                if isinstance(op, WriteRun):
                    await self._write_run(op)
                else:
                    await self._apply_reorg(op)

    async def _write_run(self, op: WriteRun) -> None:
        tables = self.tables.tables
        staged = [
            (HEIGHTS, ("chain_id", "block_number", "block_hash"), run_heights(op.records)),
            *((t.name, t.columns, rows) for t, rows in
              zip(tables, staged_rows(self.tables, op.records), strict=True)),
        ]
        async with self.conn.cursor() as cur:
            for name, columns, rows in staged:
                if not rows:
                    continue
                copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
                    _stage(name), sql.SQL(", ").join(map(sql.Identifier, columns))
                )
                async with cur.copy(copy_sql) as copy:
                    for row in rows:
                        await copy.write_row(row)
            for table in tables:
                await cur.execute(
                    sql.SQL(
                        "DELETE FROM hot.{} h USING {} s WHERE h.chain_id = s.chain_id"
                        " AND h.block_number = s.block_number AND h.block_hash <> s.block_hash"
                    ).format(sql.Identifier(table.name), _stage(HEIGHTS))
                )
            for table in tables:
                cols = sql.SQL(", ").join(map(sql.Identifier, table.columns))
                await cur.execute(
                    sql.SQL("INSERT INTO hot.{} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
                        sql.Identifier(table.name), cols, cols, _stage(table.name)
                    )
                )
            # ON COMMIT DELETE ROWS empties the stage at commit; a batch with several runs
            # must not see the previous run's rows:
            for name, _, _ in staged:
                await cur.execute(sql.SQL("DELETE FROM {}").format(_stage(name)))

    async def _apply_reorg(self, op: ApplyReorg) -> None:
        chain_id, numbers, hashes = reorg_targets(op.reorg)
        async with self.conn.cursor() as cur:
            for table in self.tables.tables:
                await cur.execute(
                    sql.SQL(
                        "DELETE FROM hot.{} WHERE chain_id = %s AND block_number = ANY(%s)"
                        " AND block_hash = ANY(%s)"
                    ).format(sql.Identifier(table.name)),
                    (chain_id, list(numbers), list(hashes)),
                )
