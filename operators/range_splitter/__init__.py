"""Split a block range into deterministic, aligned chunks (pure; no I/O).

Chunk ``k`` of size ``s`` covers blocks ``[k*s, (k+1)*s - 1]``, clipped to the requested range and
cut at the partition boundaries of the datasets' tables (multiples of their ``partition_width``,
10,000 blocks) where it would cross one, so a block lands in the same chunk (and file) whatever
range a backfill asked for, and every file lies in one partition. A split task's payload is a
:class:`SplitPayload`.
"""

from __future__ import annotations

from operators.range_splitter.payload import SplitJob, SplitPayload, partition_width_of
from operators.range_splitter.split import (
    MAX_CHUNKS,
    BadRange,
    Chunk,
    bucket_of,
    chunk_key,
    count_chunks,
    split_range,
)

__all__ = ["MAX_CHUNKS", "BadRange", "Chunk", "SplitJob", "SplitPayload", "bucket_of", "chunk_key",
           "count_chunks", "partition_width_of", "split_range"]
