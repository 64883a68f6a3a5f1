"""``aggregate_batch``: one batch of blocks from the hot tables -> one Parquet file per dataset
(per partition the batch spans) in each dataset's contract, ready to stage.

1. Read the batch in ONE read-only REPEATABLE READ transaction (every table at the same moment;
   ``hot.sql``): its blocks from ``hot.blocks``, and of the other tables only the rows of the
   block hash ``hot.blocks`` holds at their height (rows of an orphaned block that a sink has not
   deleted yet never go cold: :func:`canonical_rows`). Each table's rows come as CSV (``COPY ...
   TO STDOUT``) parsed into Arrow at once (``pyarrow.csv``): no Python object per value.
2. Refuse a batch that is not final (it ends above the hot head minus the finality depth), has a
   gap in ``hot.blocks``, blocks that do not link, or blocks missing transactions or logs
   (:mod:`.check`: retryable, the batch is tried again later). Nothing is written then.
3. Convert each dataset's rows to its contract (:func:`.transform.hot_table`, a column at a time)
   and encode them as Parquet, one file per partition of the dataset's table the batch spans
   (:func:`.plan.pieces`), named ``{chain}__{dataset}__{start:08d}_to_{end:08d}.parquet`` like
   every dataset file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from psycopg import Cursor, IsolationLevel

from operators.aggregator.check import NotYetFinal, check_blocks, check_found
from operators.aggregator.plan import Batch, final_head, pieces
from operators.aggregator.transform import DATASETS, HOT_COLUMNS, HOT_TYPES, hot_schema, hot_table
from tracekit.datasets import contract
from tracekit.db import connect
from tracekit.db.queries import load_queries

_SQL = load_queries("operators.aggregator", "hot.sql")
COMPRESSION = "zstd"  # as every dataset file (operators/cryo_ingest/files.py)
ROW_GROUP_ROWS = 256 * 1024
CSV_BLOCK_BYTES = 16 << 20  # pyarrow.csv parses blocks of this size in parallel, one Arrow chunk each

# the columns read of each hot table (hot.sql): HOT_COLUMNS, and blocks' log_count (for the checks),
# the block_hash of transactions and logs (to keep the canonical block's rows)
_EXTRA: Final[Mapping[str, Mapping[str, str]]] = {"blocks": {"log_count": "integer"},
                                                  "transactions": {"block_hash": "text"},
                                                  "logs": {"block_hash": "text"}}
_READ: Final[Mapping[str, pa.Schema]] = {
    dataset: hot_schema({**HOT_TYPES[dataset], **_EXTRA.get(dataset, {})}) for dataset in DATASETS}
# Postgres' CSV: NULL is an unquoted empty field, an empty text a quoted one; booleans are t / f
_PARSE: Final = pacsv.ParseOptions(newlines_in_values=True)
_UNQUOTED: Final = pacsv.ParseOptions(newlines_in_values=False)


@dataclass(frozen=True, slots=True)
class BatchFile:
    """A dataset's file of (part of) a batch, encoded."""

    dataset: str
    name: str
    start: int
    end: int
    rows: int
    data: bytes


def copy_bytes(cur: Cursor[Any], statement: bytes, params: Mapping[str, Any]) -> bytearray:
    """What ``statement`` (``COPY ... TO STDOUT``) sends."""
    data = bytearray()
    with cur.copy(statement, params) as copy:
        for block in copy:
            data += block
    return data


def parse_csv(data: bytearray, schema: pa.Schema) -> pa.Table:
    """Postgres' CSV (``data``) as an Arrow table of ``schema`` (its columns in the CSV's order)."""
    if not data:
        return schema.empty_table()
    return pacsv.read_csv(
        pa.py_buffer(data),
        # a value holding a newline is quoted: without quotes pyarrow may cut blocks at any newline
        parse_options=_PARSE if data.find(b'"') >= 0 else _UNQUOTED,
        read_options=pacsv.ReadOptions(column_names=schema.names, block_size=CSV_BLOCK_BYTES),
        convert_options=pacsv.ConvertOptions(
            column_types=schema, null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False,
            true_values=["t"], false_values=["f"]))


def copy_table(cur: Cursor[Any], statement: bytes, schema: pa.Schema, params: Mapping[str, Any]) -> pa.Table:
    """The rows of ``statement`` (``COPY (...) TO STDOUT (FORMAT csv)``) as an Arrow table of
    ``schema`` (its columns in the statement's order)."""
    return parse_csv(copy_bytes(cur, statement, params), schema)


def rows_per_block(table: pa.Table) -> dict[int, int]:
    """Block number -> rows of ``table`` in that block."""
    counted = pc.value_counts(table["block_number"])
    return dict(zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True))


def canonical_rows(table: pa.Table, batch: Batch, hashes: pa.Array) -> pa.Table:
    """The rows of ``table`` (of ``batch``'s blocks) whose ``block_hash`` is the hash ``hot.blocks``
    holds at their height: ``hashes[i]``, of block ``batch.start + i``."""
    if table.num_rows == 0:
        return table
    keep = pc.equal(table["block_hash"], pc.take(hashes, pc.subtract(table["block_number"], batch.start)))
    if pc.all(keep).as_py() is True:
        return table
    return table.filter(keep)  # an orphaned block's rows a sink has not deleted yet


def _hot_rows(data: bytearray, dataset: str, batch: Batch, hashes: pa.Array) -> pa.Table:
    return canonical_rows(parse_csv(data, _READ[dataset]), batch, hashes).select(list(HOT_COLUMNS[dataset]))


def read_batch(database_url: str, chain_id: int, batch: Batch, datasets: Sequence[str], *,
               finality_depth: int) -> dict[str, pa.Table]:
    """The hot rows of ``batch`` for each of ``datasets``, checked: Arrow tables of the columns of
    ``HOT_COLUMNS`` (typed as :func:`~operators.aggregator.transform.hot_schema` reads them).
    While Postgres sends a table, the one before is parsed (and its canonical rows kept) in a
    thread beside; the checks then run in dataset order."""
    params = {"chain": chain_id, "first": batch.start, "last": batch.end}
    parsing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aggregator-parse")
    try:
        with connect(database_url) as conn:
            conn.isolation_level = IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(_SQL.sql("head"), params)
                row: tuple[Any, ...] | None = cur.fetchone()
                head = None if row is None else row[0]
                final = final_head(None if head is None else int(head), finality_depth)
                if final is None or batch.end > final:
                    raise NotYetFinal(f"the batch {batch} of chain {chain_id} is not final: the hot head "
                                      f"is {head}, final blocks are {finality_depth} below it; tried again "
                                      "later")
                blocks = parse_csv(copy_bytes(cur, _SQL.sql("blocks"), params), _READ["blocks"])
                numbers = blocks["block_number"].to_pylist()
                check_blocks(chain_id, batch, list(zip(numbers, blocks["block_hash"].to_pylist(),
                                                       blocks["parent_hash"].to_pylist(), strict=True)))
                hashes = blocks["block_hash"].combine_chunks()
                parsed = {dataset: parsing.submit(_hot_rows, copy_bytes(cur, _SQL.sql(dataset), params),
                                                  dataset, batch, hashes)
                          for dataset in datasets if dataset != "blocks"}
        tables = {"blocks": blocks.select(list(HOT_COLUMNS["blocks"]))}
        counts = {"transactions": dict(zip(numbers, blocks["tx_count"].to_pylist(), strict=True)),
                  "logs": dict(zip(numbers, blocks["log_count"].to_pylist(), strict=True))}
        for dataset, table in parsed.items():
            tables[dataset] = table.result()
            if dataset in counts:
                check_found(chain_id, dataset, counts[dataset], rows_per_block(tables[dataset]))
    finally:
        parsing.shutdown(cancel_futures=True)
    return {dataset: tables[dataset] for dataset in datasets}


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
            part = table if piece == batch else table.filter(
                pc.and_(pc.greater_equal(numbers, piece.start), pc.less_equal(numbers, piece.end)))
            files.append(BatchFile(dataset, file_name(chain, dataset, piece), piece.start, piece.end,
                                   part.num_rows, parquet_bytes(part)))
    return files


def aggregate_batch(database_url: str, chain_id: int, chain: str, batch: Batch, *,
                    datasets: Sequence[str] = DATASETS, finality_depth: int) -> list[BatchFile]:
    """The batch's files, in dataset order (see the module doc). Raises a
    :class:`~operators.aggregator.check.HotNotReady` (retryable) when the hot tables do not hold
    the batch whole and final, :class:`~operators.aggregator.transform.BadHotRow` or a
    :class:`~tracekit.errors.ConformError` when a value does not fit its contract."""
    hot = read_batch(database_url, chain_id, batch, datasets, finality_depth=finality_depth)
    return batch_files(chain, batch, {dataset: hot_table(dataset, hot[dataset]) for dataset in datasets})


def read_hot(cur: Cursor[Any], chain_id: int, first: int, last: int,
             datasets: Sequence[str]) -> dict[str, pa.Table]:
    """The hot rows of blocks ``first..last`` of each of ``datasets``, in the caller's transaction
    (the query service reads them in the REPEATABLE READ transaction that pins its versions),
    each in its dataset's contract: canonical rows only (of the block hash ``hot.blocks`` holds at
    their height), NOT checked for finality or gaps (what the hot tables hold now)."""
    params = {"chain": chain_id, "first": first, "last": last}
    blocks = copy_table(cur, _SQL.sql("blocks"), _READ["blocks"], params)
    found: dict[str, pa.Table] = {}
    keys = blocks.select(["block_number", "block_hash"])
    for dataset in datasets:
        if dataset == "blocks":
            found[dataset] = hot_table(dataset, blocks.select(list(HOT_COLUMNS["blocks"])))
            continue
        rows = copy_table(cur, _SQL.sql(dataset), _READ[dataset], params)
        if rows.num_rows:  # an orphaned block's rows a sink has not deleted yet are left out
            rows = rows.join(keys, keys=["block_number", "block_hash"], join_type="inner")
        found[dataset] = hot_table(dataset, rows.select(list(HOT_COLUMNS[dataset])))
    return found
