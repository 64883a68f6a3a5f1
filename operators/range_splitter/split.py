"""Aligned block-range splitting: :func:`split_range` (and :func:`count_chunks`, the same cut without
the chunks), :func:`chunk_key`. Pure and synchronous."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from tracekit.errors import ConfigError

MAX_CHUNKS = 1_000_000
_CHAIN_NAME = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)*")


class BadRange(ConfigError):
    """The block range or chunk size is invalid."""


def _int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRange(f"{name} must be an integer, got {value!r}")
    return value


@dataclass(frozen=True, slots=True, order=True)
class Chunk:
    """Blocks ``start`` to ``end``, both INCLUSIVE (cryo's file-name convention)."""

    start: int
    end: int

    def __post_init__(self) -> None:
        start, end = _int("chunk start", self.start), _int("chunk end", self.end)
        if start < 0:
            raise BadRange(f"chunk start must be >= 0, got {start}")
        if end < start:
            raise BadRange(f"chunk end must be >= its start {start}, got {end}")

    @property
    def size(self) -> int:
        """Number of blocks in the chunk."""
        return self.end - self.start + 1

    def __str__(self) -> str:
        return f"blocks {self.start}..{self.end}"


def bucket_of(block: int, chunk_size: int) -> int:
    """Index ``k`` of the aligned bucket ``[k*chunk_size, (k+1)*chunk_size - 1]`` holding ``block``."""
    return block // chunk_size


def split_range(
    start_block: int, end_block: int, chunk_size: int, *, partition_width: int | None = None,
    max_chunks: int = MAX_CHUNKS,
) -> list[Chunk]:
    """Chunks covering ``[start_block, end_block]`` (inclusive), in order, aligned to ``chunk_size``
    and, with ``partition_width``, cut at every multiple of it too.

    Every chunk lies within one aligned bucket of ``chunk_size`` blocks and within one partition
    ``[j*partition_width, (j+1)*partition_width - 1]`` (a dataset table's ``truncate[W]`` partition
    on ``block_number``, so each file lies in one): when the width is a multiple of the chunk size,
    the chunks are the buckets; otherwise a bucket crossing a partition boundary is cut there, and
    a chunk size above the width gives one chunk per partition. Only the first and the last chunk
    are clipped to the range; which chunk a block lands in never depends on the range asked for.
    Raises :class:`BadRange` (a :class:`~tracekit.errors.ConfigError`) naming the bad value:
    ``start_block < 0``, ``end_block < start_block``, ``chunk_size < 1``, ``partition_width < 1``
    or more than ``max_chunks`` chunks.
    """
    start, end, size, width = _checked(start_block, end_block, chunk_size, partition_width, max_chunks)
    cuts: Sequence[int] = range(_next_multiple(start + 1, size), end + 1, size)
    if width is not None and width % size:  # partition boundaries that are not bucket boundaries
        cuts = sorted({*cuts, *range(_next_multiple(start + 1, width), end + 1, width)})
    firsts = [start, *cuts]
    lasts = [*(c - 1 for c in cuts), end]
    return [Chunk(a, b) for a, b in zip(firsts, lasts, strict=True)]


def count_chunks(start_block: int, end_block: int, chunk_size: int, *, partition_width: int | None = None,
                 max_chunks: int = MAX_CHUNKS) -> int:
    """How many chunks :func:`split_range` cuts the range into (same checks), without making them."""
    start, end, size, width = _checked(start_block, end_block, chunk_size, partition_width, max_chunks)
    return _count(start, end, size, width)


def _next_multiple(block: int, step: int) -> int:
    """The first multiple of ``step`` at or above ``block``."""
    return -(-block // step) * step


def _multiples(start: int, end: int, step: int) -> int:
    """How many multiples of ``step`` lie in ``(start, end]``: the cuts ``step`` makes."""
    return end // step - start // step


def _count(start: int, end: int, size: int, width: int | None) -> int:
    cuts = _multiples(start, end, size)
    if width is not None:  # the partition boundaries that are not chunk boundaries already
        cuts += _multiples(start, end, width) - _multiples(start, end, math.lcm(size, width))
    return cuts + 1


def _checked(start_block: int, end_block: int, chunk_size: int, partition_width: int | None,
             max_chunks: int) -> tuple[int, int, int, int | None]:
    """The checked range, size and width; :class:`BadRange` for bad values or too many chunks."""
    start = _int("start_block", start_block)
    end = _int("end_block", end_block)
    size = _int("chunk_size", chunk_size)
    width = None if partition_width is None else _int("partition_width", partition_width)
    if start < 0:
        raise BadRange(f"start_block must be >= 0, got {start}")
    if end < start:
        raise BadRange(f"end_block must be >= start_block ({start}), got {end}")
    if size < 1:
        raise BadRange(f"chunk_size must be >= 1, got {size}")
    if width is not None and width < 1:
        raise BadRange(f"partition_width must be >= 1, got {width}")
    if _int("max_chunks", max_chunks) < 1:
        raise BadRange(f"max_chunks must be >= 1, got {max_chunks}")
    count = _count(start, end, size, width)
    if count > max_chunks:
        where = f"blocks {start}..{end} in chunks of {size}"
        partitions = end // width - start // width + 1 if width is not None else 1
        if partitions > max_chunks:
            raise BadRange(f"{where} make {count} chunks, more than the limit of {max_chunks}, and no chunk "
                           f"size makes fewer than {partitions} (one per {width}-block partition):"
                           " backfill a shorter range")
        fits = -(-(end - start + 1) // max(1, max_chunks - 1))  # alignment may add one chunk
        if width is not None and _count(start, end, fits, width) > max_chunks:
            fits = width  # one chunk per partition
        raise BadRange(f"{where} make {count} chunks, more than the limit of {max_chunks}: use a larger "
                       f"chunk_size (at least {fits})")
    return start, end, size, width


def chunk_key(chain: str, chunk: Chunk) -> str:
    """Deterministic partition key of a chunk: ``"{chain}__{start:08d}_to_{end:08d}"``.

    The same separators as the dataset files (``{chain}__{dataset}__{start:08d}_to_{end:08d}``).
    ``chain`` must be a lower-case name of ``[a-z0-9]`` words joined by single underscores.
    """
    if not isinstance(chain, str) or not _CHAIN_NAME.fullmatch(chain):
        raise BadRange(
            f"chain name must be lower-case [a-z0-9] words joined by single underscores, got {chain!r}"
        )
    return f"{chain}__{chunk.start:08d}_to_{chunk.end:08d}"
