"""parquet_compact: the small files of one partition of a dataset version rewritten as ONE file with
the same rows, which the commit makes the dataset's next version.

- :mod:`.plan` (pure): a snapshot's files grouped by partition, which partitions to compact
  (at least ``min_files`` files), a partition a user names (aligned, with rows), the groups of
  overlapping files read together, the file name.
- :mod:`.rewrite` (pure): rows conformed to the contract, checked to lie in the range, sorted by
  the contract's sort order; the row counts checked.
- :mod:`.source` (I/O): the snapshot's files from its manifests; the partition read at the pinned
  snapshot, written as one zstd Parquet file.
- :mod:`.payload`: the task's payload (the run's params: dataset, range, chain, pinned input).

The dispatcher starts one run of the built-in ``compact`` DAG (``dispatcher/dags/compact.yaml``)
per partition (``trace datasets compact``, ``POST /v1/datasets/{id}/compact``); see docs/datasets.md.
"""

from operators.parquet_compact.payload import CompactParams, CompactPayload, PinnedInput
from operators.parquet_compact.plan import (
    BadPartition,
    Partition,
    SnapshotFile,
    file_name,
    partition_at,
    partition_range,
    partitions,
    read_groups,
    to_compact,
)
from operators.parquet_compact.rewrite import CompactMismatch, check_counts, sorted_rows
from operators.parquet_compact.source import Compacted, check_snapshot, compact_partition, snapshot_files

__all__ = [
    "BadPartition",
    "CompactMismatch",
    "CompactParams",
    "CompactPayload",
    "Compacted",
    "Partition",
    "PinnedInput",
    "SnapshotFile",
    "check_counts",
    "check_snapshot",
    "compact_partition",
    "file_name",
    "partition_at",
    "partition_range",
    "partitions",
    "read_groups",
    "snapshot_files",
    "sorted_rows",
    "to_compact",
]
