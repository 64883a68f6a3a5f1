"""Postgres adapter of the hot-table sink: idempotent, reorg-aware batched writes.

A run of blocks is COPYed into session staging tables, then, in the same transaction: rows at
those heights with a *different* block hash are deleted (a replay of an older branch, or a
replacement whose reorg event was already applied), and the staged rows are inserted with
``ON CONFLICT DO NOTHING`` (a redelivered block changes nothing). A reorg deletes the orphaned
heights' rows by hash, so replaying an old reorg never removes the branch that replaced it.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from streams.hot_sink.plan import (
    BLOCK_COLUMNS,
    LOG_COLUMNS,
    TRANSACTION_COLUMNS,
    ApplyReorg,
    Op,
    WriteBlocks,
    block_rows,
    reorg_targets,
)

_TABLES = (
    ("blocks", "stage_blocks", BLOCK_COLUMNS),
    ("transactions", "stage_transactions", TRANSACTION_COLUMNS),
    ("logs", "stage_logs", LOG_COLUMNS),
)


class HotTableWriter:
    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn

    @classmethod
    async def connect(cls, url: str) -> HotTableWriter:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        for table, stage, _ in _TABLES:
            await conn.execute(
                sql.SQL(
                    "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE hot.{} INCLUDING DEFAULTS)"
                    " ON COMMIT DELETE ROWS"
                ).format(sql.Identifier(stage), sql.Identifier(table))
            )
        return cls(conn)

    async def close(self) -> None:
        await self.conn.close()

    async def apply(self, ops: list[Op]) -> None:
        """Apply ``ops`` in order, all in one transaction."""
        async with self.conn.transaction():
            for op in ops:
                if isinstance(op, WriteBlocks):
                    await self._write_blocks(op)
                else:
                    await self._apply_reorg(op)

    async def _write_blocks(self, op: WriteBlocks) -> None:
        staged: tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]] = ([], [], [])
        for block in op.blocks:
            block_row, tx_rows, log_rows = block_rows(block)
            staged[0].append(block_row)
            staged[1].extend(tx_rows)
            staged[2].extend(log_rows)
        async with self.conn.cursor() as cur:
            for (_, stage, columns), rows in zip(_TABLES, staged, strict=True):
                if not rows:
                    continue
                copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
                    sql.Identifier(stage), sql.SQL(", ").join(map(sql.Identifier, columns))
                )
                async with cur.copy(copy_sql) as copy:
                    for row in rows:
                        await copy.write_row(row)
            for table, _, _ in _TABLES:
                await cur.execute(
                    sql.SQL(
                        "DELETE FROM hot.{} h USING stage_blocks s WHERE h.chain_id = s.chain_id"
                        " AND h.block_number = s.block_number AND h.block_hash <> s.block_hash"
                    ).format(sql.Identifier(table))
                )
            for table, stage, columns in _TABLES:
                cols = sql.SQL(", ").join(map(sql.Identifier, columns))
                await cur.execute(
                    sql.SQL("INSERT INTO hot.{} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
                        sql.Identifier(table), cols, cols, sql.Identifier(stage)
                    )
                )
            # ON COMMIT DELETE ROWS empties the stage at commit; a batch with several runs
            # must not see the previous run's rows:
            for _, stage, _ in _TABLES:
                await cur.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(stage)))

    async def _apply_reorg(self, op: ApplyReorg) -> None:
        chain_id, numbers, hashes = reorg_targets(op.reorg)
        async with self.conn.cursor() as cur:
            for table, _, _ in _TABLES:
                await cur.execute(
                    sql.SQL(
                        "DELETE FROM hot.{} WHERE chain_id = %s AND block_number = ANY(%s)"
                        " AND block_hash = ANY(%s)"
                    ).format(sql.Identifier(table)),
                    (chain_id, list(numbers), list(hashes)),
                )
