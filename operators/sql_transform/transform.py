"""A job's SQL over Arrow tables in an in-memory DuckDB, and its result as dataset files. No I/O.

:func:`run_sql` registers each input (an Arrow table) under its dataset id, then locks DuckDB
down before the SQL runs: no file or network access (``enable_external_access=false``: no
``read_csv``, ``COPY``, ``ATTACH``, ``INSTALL``), no extension autoloading or autoinstalling, a
memory limit, no spilling to disk, and the configuration locked so that the SQL cannot change any
of it. DuckDB's own parser must agree with the gate (:mod:`tracekit.sqlgate`) that the SQL is one
SELECT. A DuckDB error is one :class:`SqlFailed` line (DuckDB's message): permanent, the same SQL
fails the same way.

:func:`result_files` conforms the result to its :func:`~tracekit.datasets.derived_contract`
(sorted by ``sort``, NULLs first) and encodes it as zstd Parquet: with a ``block_number`` column,
one file per ``truncate[10000](block_number)`` partition, with the blocks its rows hold; without
one, one file and no block range. A result without rows is one empty file without a block range.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tracekit.datasets import PARTITION_COLUMN, DatasetContract, conform, derived_contract
from tracekit.errors import ConfigError
from tracekit.sqlgate import GatedSql, SqlRefused

OPERATOR: Final = "sql_transform"

MEMORY_LIMIT: Final = "2GB"
THREADS: Final = 2
COMPRESSION: Final = "zstd"  # as every dataset file
ROW_GROUP_ROWS: Final = 256 * 1024


class SqlFailed(ConfigError):
    """DuckDB could not run the job's SQL."""


@dataclass(frozen=True, slots=True)
class ResultFile:
    """One encoded file of the result: its name under the staging prefix, the blocks its rows hold
    (None: an unpartitioned result, or no rows), rows and bytes."""

    name: str
    block_start: int | None
    block_end: int | None
    rows: int
    data: bytes


def _duckdb_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def run_sql(gated: GatedSql, inputs: Mapping[str, pa.Table], *, memory_limit: str = MEMORY_LIMIT,
            threads: int = THREADS) -> pa.Table:
    """The result of ``gated`` over ``inputs`` (table name as the SQL spells it -> rows)."""
    connection = duckdb.connect(":memory:", config={
        "autoinstall_known_extensions": False, "autoload_known_extensions": False,
        "allow_community_extensions": False, "memory_limit": memory_limit, "threads": threads,
        "temp_directory": "",
    })
    try:
        try:
            for name, table in inputs.items():
                connection.register(name, table)
            connection.execute("SET enable_external_access = false")
            connection.execute("SET lock_configuration = true")
            statements = connection.extract_statements(gated.sql)
            kinds = [statement.type for statement in statements]
            if kinds != [duckdb.StatementType.SELECT]:
                shown = ", ".join(kind.name for kind in kinds) or "none"
                raise SqlRefused("one-statement" if len(kinds) != 1 else "read-only",
                                 f"DuckDB reads the SQL as statement(s) {shown}, not one SELECT",
                                 subject=OPERATOR)
            return connection.sql(gated.sql).to_arrow_table()
        except duckdb.Error as exc:
            raise SqlFailed(f"{OPERATOR}: DuckDB: {_duckdb_line(exc)}") from exc
    finally:
        connection.close()


def contract_name(dataset_id: str) -> str:
    """A snake_case name for ``dataset_id`` (its last dot-separated part), for its contract."""
    name = re.sub(r"[^a-z0-9_]+", "_", dataset_id.rsplit(".", 1)[-1].lower()).strip("_")
    return name if re.match(r"[a-z]", name) else f"d_{name}"


def file_stem(dataset_id: str) -> str:
    """``dataset_id`` as a file name: what is not a letter, digit, ``_``, ``.`` or ``-`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset_id).strip(".") or "dataset"


def result_contract(dataset_id: str, result: pa.Table, sort: Sequence[str] = ()) -> DatasetContract:
    """The derived contract of ``result`` (:func:`~tracekit.datasets.derived_contract`); a sort
    column the result lacks is named."""
    missing = [column for column in sort if column not in result.column_names]
    if missing:
        raise ConfigError(f"{OPERATOR}: sort names {missing[0]!r}, which the SQL's result does not have "
                          f"(its columns: {', '.join(result.column_names)})")
    return derived_contract(contract_name(dataset_id), result.schema, sort=sort)


def _encode(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=COMPRESSION, row_group_size=ROW_GROUP_ROWS)
    return bytes(sink.getvalue())


def _sorted(table: pa.Table, keys: Sequence[str]) -> pa.Table:
    if not keys or table.num_rows < 2:
        return table
    order = pc.sort_indices(table, sort_keys=[(key, "ascending", "at_start") for key in keys])
    return table.take(order)


def result_files(dataset_id: str, result: pa.Table, sort: Sequence[str] = ()) -> list[ResultFile]:
    """``result`` as the dataset's files (see the module doc), in block order."""
    contract = result_contract(dataset_id, result, sort)
    rows = _sorted(conform(result, contract), contract.sort_keys)
    stem = file_stem(dataset_id)
    if not contract.partitioned or rows.num_rows == 0:
        return [ResultFile(f"{stem}.parquet", None, None, rows.num_rows, _encode(rows))]
    numbers = rows.column(PARTITION_COLUMN)
    lowest = pc.min(numbers).as_py()
    if lowest < 0:
        raise ConfigError(f"{OPERATOR}: the result has block_number {lowest}; block numbers are not negative")
    width = contract.partition_width
    partitions = pc.divide(numbers, pa.scalar(width, pa.int64()))
    files = []
    for partition in sorted(pc.unique(partitions).to_pylist()):
        part = rows.filter(pc.equal(partitions, partition))
        part_numbers = part.column(PARTITION_COLUMN)
        start = partition * width
        files.append(ResultFile(f"{stem}__{start:08d}_to_{start + width - 1:08d}.parquet",
                                pc.min(part_numbers).as_py(), pc.max(part_numbers).as_py(), part.num_rows,
                                _encode(part)))
    return files
