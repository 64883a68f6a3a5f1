"""Which partitions of a dataset version to compact, and how to read one, as pure rules (no I/O).

A dataset's table is partitioned by ``truncate[W](block_number)``: partition ``k`` is blocks
``[k*W, (k+1)*W - 1]``. Backfills in small chunks and finalization batches leave several files in
one partition; a compaction rewrites the files of one partition of one version as ONE file with
the same rows. :func:`partitions` groups a snapshot's files by partition, :func:`to_compact`
picks those with at least ``min_files`` files, :func:`partition_at` checks a partition a user
names. The range a compaction replaces is the blocks its files cover (:attr:`Partition.first_block`
.. :attr:`Partition.last_block`), not the whole partition: the commit's integrity check wants every
block of the replaced range in ``blocks``, and a partition is often filled only in part.
:func:`read_groups` cuts the files into groups of overlapping block ranges, read (and sorted) one
group at a time: files written by range never overlap, so a group is usually one file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tracekit.errors import ConfigError


class BadPartition(ConfigError):
    """A partition that cannot be compacted as asked (not aligned, no rows)."""


@dataclass(frozen=True, slots=True, order=True)
class SnapshotFile:
    """A data file of a snapshot: its partition (first block), the blocks its rows cover, rows, bytes."""

    partition: int
    first_block: int
    last_block: int
    path: str
    rows: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Partition:
    """Blocks ``start..end`` (a whole partition) and the files of a snapshot in it, in block order."""

    start: int
    end: int
    files: tuple[SnapshotFile, ...]

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    @property
    def first_block(self) -> int:
        return min(f.first_block for f in self.files)

    @property
    def last_block(self) -> int:
        return max(f.last_block for f in self.files)

    def __str__(self) -> str:
        return f"partition {self.start}..{self.end}"


def _width(width: int) -> None:
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise BadPartition(f"a partition width is a positive integer, got {width!r}")


def partition_range(start: int, width: int) -> tuple[int, int]:
    """The partition that starts at block ``start``: ``(start, start + width - 1)``; a block that
    is not a partition's first is refused, naming the partition that holds it."""
    _width(width)
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise BadPartition(f"a partition is named by its first block, a block number >= 0; got {start!r}")
    if start % width:
        first = start // width * width
        raise BadPartition(f"block {start} is not the first block of a partition: partitions are {width} "
                           f"blocks wide (truncate[{width}](block_number)); block {start} is in "
                           f"{first}..{first + width - 1}, name it by {first}")
    return start, start + width - 1


def partitions(files: Iterable[SnapshotFile], width: int) -> list[Partition]:
    """The files grouped by partition, partitions and files in block order. A file whose blocks
    leave its partition is refused (every writer writes a file within one partition)."""
    _width(width)
    found: dict[int, list[SnapshotFile]] = {}
    for f in files:
        start, end = partition_range(f.partition, width)
        if not start <= f.first_block <= f.last_block <= end:
            raise BadPartition(f"file {f.path} holds blocks {f.first_block}..{f.last_block}, not within its "
                               f"partition {start}..{end}")
        found.setdefault(start, []).append(f)
    return [Partition(start, start + width - 1, tuple(sorted(found[start]))) for start in sorted(found)]


def to_compact(parts: Sequence[Partition], min_files: int) -> list[Partition]:
    """The partitions holding at least ``min_files`` files, in block order."""
    if isinstance(min_files, bool) or not isinstance(min_files, int) or min_files < 1:
        raise BadPartition(f"min_files is a positive integer, got {min_files!r}")
    return [p for p in parts if len(p.files) >= min_files]


def partition_at(parts: Sequence[Partition], start: int, width: int, *, what: str) -> Partition:
    """The partition starting at block ``start`` (aligned, with rows in ``what``, e.g. ``blocks
    version 3``), else :class:`BadPartition`."""
    first, last = partition_range(start, width)
    for p in parts:
        if p.start == first:
            return p
    raise BadPartition(f"partition {first}..{last} of {what} has no rows")


def read_groups(files: Sequence[SnapshotFile]) -> list[tuple[int, int]]:
    """The block ranges to read one at a time, in order: the files' ranges, those that overlap
    merged (their rows must be sorted together). Each range holds whole files only."""
    groups: list[list[int]] = []
    for f in sorted(files, key=lambda f: (f.first_block, f.last_block)):
        if groups and f.first_block <= groups[-1][1]:
            groups[-1][1] = max(groups[-1][1], f.last_block)
        else:
            groups.append([f.first_block, f.last_block])
    return [(a, b) for a, b in groups]


def file_name(chain: str, dataset: str, start: int, end: int) -> str:
    """``{chain}__{dataset}__{start:08d}_to_{end:08d}.parquet``, as every dataset file is named."""
    return f"{chain}__{dataset}__{start:08d}_to_{end:08d}.parquet"
