"""``aggregate_batch``: one batch of blocks from the hot tables -> one Parquet file per dataset
(per partition the batch spans) in each dataset's contract, ready to stage.

1. Read the batch in ONE read-only REPEATABLE READ transaction (every table at the same moment;
   ``hot.sql``): its blocks from ``hot.blocks``, and of the other tables only the rows of the
   block hash ``hot.blocks`` holds at their height (rows of an orphaned block that a sink has not
   deleted yet never go cold).
2. Refuse a batch that is not final (it ends above the hot head minus the finality depth), has a
   gap in ``hot.blocks``, blocks that do not link, or blocks missing transactions or logs
   (:mod:`.check`: retryable, the batch is tried again later). Nothing is written then.
3. Convert each dataset's rows to its contract (:mod:`.transform`) and encode them as Parquet,
   one file per partition of the dataset's table the batch spans (:func:`.plan.pieces`), named
   ``{chain}__{dataset}__{start:08d}_to_{end:08d}.parquet`` like every dataset file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from psycopg import IsolationLevel

from operators.aggregator.check import NotYetFinal, check_blocks, check_counts
from operators.aggregator.plan import Batch, final_head, pieces
from operators.aggregator.transform import DATASETS, HOT_COLUMNS, dataset_table
from tracekit.datasets import contract
from tracekit.db import connect
from tracekit.db.queries import load_queries

_SQL = load_queries("operators.aggregator", "hot.sql")
COMPRESSION = "zstd"  # as every dataset file (operators/cryo_ingest/files.py)
ROW_GROUP_ROWS = 256 * 1024


@dataclass(frozen=True, slots=True)
class BatchFile:
    """A dataset's file of (part of) a batch, encoded."""

    dataset: str
    name: str
    start: int
    end: int
    rows: int
    data: bytes


def read_batch(database_url: str, chain_id: int, batch: Batch, datasets: Sequence[str], *,
               finality_depth: int) -> dict[str, list[tuple[Any, ...]]]:
    """The hot rows of ``batch`` for each of ``datasets`` (tuples in ``HOT_COLUMNS`` order), checked."""
    params = {"chain": chain_id, "first": batch.start, "last": batch.end}
    with connect(database_url) as conn:
        conn.isolation_level = IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(_SQL.sql("head"), params)
            row: tuple[Any, ...] | None = cur.fetchone()
            head = None if row is None else row[0]
            final = final_head(None if head is None else int(head), finality_depth)
            if final is None or batch.end > final:
                raise NotYetFinal(f"the batch {batch} of chain {chain_id} is not final: the hot head is "
                                  f"{head}, final blocks are {finality_depth} below it; tried again later")
            cur.execute(_SQL.sql("blocks"), params)
            blocks: list[tuple[Any, ...]] = list(cur.fetchall())
            check_blocks(chain_id, batch, [(int(b[0]), str(b[1]), str(b[2])) for b in blocks])
            width = len(HOT_COLUMNS["blocks"])
            rows: dict[str, list[tuple[Any, ...]]] = {"blocks": [tuple(b[:width]) for b in blocks]}
            counts = {"transactions": {int(b[0]): int(b[8]) for b in blocks},
                      "logs": {int(b[0]): int(b[width]) for b in blocks}}
            for dataset in datasets:
                if dataset == "blocks":
                    continue
                cur.execute(_SQL.sql(dataset), params)
                rows[dataset] = list(cur.fetchall())
                if dataset in counts:
                    check_counts(chain_id, dataset, counts[dataset], rows[dataset])
    return {dataset: rows[dataset] for dataset in datasets}


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=COMPRESSION, row_group_size=ROW_GROUP_ROWS)
    return bytes(sink.getvalue())


def file_name(chain: str, dataset: str, piece: Batch) -> str:
    return f"{chain}__{dataset}__{piece.start:08d}_to_{piece.end:08d}.parquet"


def batch_files(chain: str, batch: Batch, tables: dict[str, pa.Table]) -> list[BatchFile]:
    """Each dataset's table cut into one encoded file per partition of its table the batch spans
    (a dataset without rows still gets its files: the batch's blocks are known to hold none)."""
    files = []
    for dataset, table in tables.items():
        for piece in pieces(batch, contract(dataset).partition_width):
            numbers = table["block_number"]
            part = table.filter(pc.and_(pc.greater_equal(numbers, piece.start),
                                        pc.less_equal(numbers, piece.end)))
            files.append(BatchFile(dataset, file_name(chain, dataset, piece), piece.start, piece.end,
                                   part.num_rows, parquet_bytes(part)))
    return files


def aggregate_batch(database_url: str, chain_id: int, chain: str, batch: Batch, *,
                    datasets: Sequence[str] = DATASETS, finality_depth: int) -> list[BatchFile]:
    """The batch's files, in dataset order (see the module doc). Raises a
    :class:`~operators.aggregator.check.HotNotReady` (retryable) when the hot tables do not hold
    the batch whole and final, :class:`~operators.aggregator.transform.BadHotRow` or a
    :class:`~tracekit.errors.ConformError` when a value does not fit its contract."""
    rows = read_batch(database_url, chain_id, batch, datasets, finality_depth=finality_depth)
    tables = {dataset: dataset_table(dataset, rows[dataset]) for dataset in datasets}
    return batch_files(chain, batch, tables)
