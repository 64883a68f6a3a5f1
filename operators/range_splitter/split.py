"""Aligned block-range splitting: :func:`split_range` (and :func:`count_chunks`, the same cut without
the chunks), :func:`chunk_key`. Pure and synchronous."""

from __future__ import annotations

import re
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
    start_block: int, end_block: int, chunk_size: int, *, max_chunks: int = MAX_CHUNKS
) -> list[Chunk]:
    """Chunks covering ``[start_block, end_block]`` (inclusive), in order, aligned to ``chunk_size``.

    Every chunk lies within one aligned bucket; only the first and the last may be clipped.
    Raises :class:`BadRange` (a :class:`~tracekit.errors.ConfigError`) naming the bad value:
    ``start_block < 0``, ``end_block < start_block``, ``chunk_size < 1`` or more than
    ``max_chunks`` chunks.
    """
    start, end, size, buckets = _buckets(start_block, end_block, chunk_size, max_chunks)
    return [Chunk(max(start, k * size), min(end, (k + 1) * size - 1)) for k in buckets]


def count_chunks(start_block: int, end_block: int, chunk_size: int, *, max_chunks: int = MAX_CHUNKS) -> int:
    """How many chunks :func:`split_range` cuts the range into (same checks), without making them."""
    return len(_buckets(start_block, end_block, chunk_size, max_chunks)[3])


def _buckets(start_block: int, end_block: int, chunk_size: int,
             max_chunks: int) -> tuple[int, int, int, range]:
    """The checked range and size, and the aligned buckets (by index) the range touches."""
    start = _int("start_block", start_block)
    end = _int("end_block", end_block)
    size = _int("chunk_size", chunk_size)
    if start < 0:
        raise BadRange(f"start_block must be >= 0, got {start}")
    if end < start:
        raise BadRange(f"end_block must be >= start_block ({start}), got {end}")
    if size < 1:
        raise BadRange(f"chunk_size must be >= 1, got {size}")
    if _int("max_chunks", max_chunks) < 1:
        raise BadRange(f"max_chunks must be >= 1, got {max_chunks}")
    first, last = bucket_of(start, size), bucket_of(end, size)
    count = last - first + 1
    if count > max_chunks:
        fits = -(-(end - start + 1) // max(1, max_chunks - 1))  # alignment may add one chunk
        raise BadRange(
            f"blocks {start}..{end} in chunks of {size} make {count} chunks, more than the limit of "
            f"{max_chunks}: use a larger chunk_size (at least {fits})"
        )
    return start, end, size, range(first, last + 1)


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
