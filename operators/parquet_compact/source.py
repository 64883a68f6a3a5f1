"""The I/O of a compaction: a snapshot's data files from its manifests, and one partition of a
pinned snapshot read (by pyiceberg, at that snapshot id, never at ``main``), sorted and written as
one zstd Parquet file.

:func:`snapshot_files` lists the files (partition, block bounds, rows, bytes: the manifests say,
no data file is opened); the dispatcher plans with it (which partitions have many files) and the
operator reads with it. :func:`compact_partition` reads the partition's rows one group of
overlapping files at a time (:func:`~operators.parquet_compact.plan.read_groups`), each group
conformed and sorted (:func:`~operators.parquet_compact.rewrite.sorted_rows`) and appended to the
file, so memory holds one group, not the partition; then checks that the file holds exactly the
rows the snapshot's files hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pyiceberg.conversions import from_bytes
from pyiceberg.table import Table
from pyiceberg.types import LongType

from operators.parquet_compact.payload import CompactParams
from operators.parquet_compact.plan import BadPartition, SnapshotFile, file_name, read_groups
from operators.parquet_compact.rewrite import check_counts, sorted_rows
from tracekit.datasets import PARTITION_COLUMN, contract
from tracekit.errors import CatalogError

COMPRESSION = "zstd"  # as every dataset file
ROW_GROUP_ROWS = 256 * 1024


@dataclass(frozen=True, slots=True)
class Compacted:
    """The file a compaction wrote: its name, local path, rows, and the files it replaces."""

    name: str
    path: Path
    rows: int
    replaced: tuple[SnapshotFile, ...]


def _block_filter(first: int, last: int) -> str:
    return f"{PARTITION_COLUMN} >= {first} and {PARTITION_COLUMN} <= {last}"


def _bound(value: bytes | None) -> int | None:
    return None if value is None else int(from_bytes(LongType(), value))


def check_snapshot(table: Table, snapshot_id: int) -> None:
    if table.snapshot_by_id(snapshot_id) is None:
        raise CatalogError(f"{'.'.join(table.name())}: no snapshot {snapshot_id} (its version was expired?)")


def snapshot_files(table: Table, snapshot_id: int, width: int, *, first: int | None = None,
                   last: int | None = None) -> list[SnapshotFile]:
    """The data files of snapshot ``snapshot_id`` (those that may hold blocks ``first..last``,
    when given), in block order. A file without block bounds (no rows) is left out."""
    check_snapshot(table, snapshot_id)
    field_id = table.schema().find_field(PARTITION_COLUMN).field_id
    row_filter: Any = _block_filter(first, last) if first is not None and last is not None else "true"
    found = []
    for task in table.scan(snapshot_id=snapshot_id, row_filter=row_filter).plan_files():
        f = task.file
        low = _bound((f.lower_bounds or {}).get(field_id))
        high = _bound((f.upper_bounds or {}).get(field_id))
        if low is None or high is None or f.record_count == 0:
            continue
        partition = f.partition[0] if f.partition is not None and len(f.partition) else None
        found.append(SnapshotFile(int(partition) if isinstance(partition, int) else low // width * width,
                                  low, high, f.file_path, int(f.record_count), int(f.file_size_in_bytes)))
    return sorted(found)


def compact_partition(table: Table, params: CompactParams, directory: Path) -> Compacted:
    """The rows of blocks ``params.start_block..end_block`` at the pinned snapshot, sorted, as one
    Parquet file in ``directory`` (see the module doc). A file of the snapshot that holds blocks
    outside the range is refused (compact a partition's whole range), as is a range without rows."""
    dataset, first, last = params.dataset, params.start_block, params.end_block
    terms = contract(dataset)
    snapshot = params.pinned.snapshot_id
    files = snapshot_files(table, snapshot, terms.partition_width, first=first, last=last)
    files = [f for f in files if f.last_block >= first and f.first_block <= last]
    outside = [f for f in files if f.first_block < first or f.last_block > last]
    if outside:
        f = outside[0]
        raise BadPartition(f"{dataset}: file {f.path} holds blocks {f.first_block}..{f.last_block}, beyond "
                           f"the range {first}..{last}; compact the blocks all the partition's files cover")
    if not files:
        raise BadPartition(f"{dataset} version {params.pinned.version} has no rows in blocks {first}..{last}")
    name = file_name(params.file_prefix, dataset, first, last)
    path = directory / name
    read = 0
    with pq.ParquetWriter(path, terms.arrow_schema(), compression=COMPRESSION) as writer:
        for low, high in read_groups(files):
            rows = table.scan(snapshot_id=snapshot, row_filter=_block_filter(low, high)).to_arrow()
            group = sorted_rows(rows, terms, low, high)
            read += rows.num_rows
            writer.write_table(group, row_group_size=ROW_GROUP_ROWS)
    check_counts(dataset, expected=sum(f.rows for f in files), read=read,
                 written=pq.read_metadata(path).num_rows)
    return Compacted(name, path, read, tuple(files))
