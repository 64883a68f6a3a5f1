"""Which blocks move from the hot tables into the cold tables next: the Aggregator's batches, as
pure rules (no I/O).

A batch is a whole aligned range of ``batch_blocks`` blocks: batch ``k`` is blocks
``[k*batch_blocks, (k+1)*batch_blocks - 1]``, never a part of one, so a block always lands in the
same batch whatever the timing. A batch is due once its last block is final: at most
``hot_head - finality_depth``. The next batch is the one holding the block after the cold
watermark (the last cold block, which finalizing leaves at a batch's end, so batches follow each
other); without a watermark, the first batch starting at or above the hot tail (the lowest block
in the hot tables: blocks below it were never hot, they are a backfill's to write).

After a batch is committed and current, the watermark moves to its end (:func:`advance`) unless
that would claim blocks that are not cold (a batch beyond a hole), and hot rows of blocks below
``watermark - overlap`` may go (:func:`prune_below`).
"""

from __future__ import annotations

from dataclasses import dataclass

from tracekit.errors import ConfigError


class BadBatch(ConfigError):
    """The batch or its planning inputs are invalid."""


@dataclass(frozen=True, slots=True, order=True)
class Batch:
    """Blocks ``start`` to ``end``, both inclusive."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.end < self.start:
            raise BadBatch(f"a batch is blocks start..end, 0 <= start <= end; got {self.start}..{self.end}")

    @property
    def size(self) -> int:
        return self.end - self.start + 1

    def __str__(self) -> str:
        return f"blocks {self.start}..{self.end}"


def _positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadBatch(f"{name} must be a positive integer, got {value!r}")


def batch_of(block: int, batch_blocks: int) -> Batch:
    """The aligned batch holding ``block``."""
    _positive("batch_blocks", batch_blocks)
    start = block // batch_blocks * batch_blocks
    return Batch(start, start + batch_blocks - 1)


def final_head(hot_head: int | None, finality_depth: int) -> int | None:
    """The highest final block: ``finality_depth`` below the hot head (None: nothing is final)."""
    if finality_depth < 0:
        raise BadBatch(f"finality_depth must be >= 0, got {finality_depth}")
    if hot_head is None or hot_head - finality_depth < 0:
        return None
    return hot_head - finality_depth


def next_batches(cold_watermark: int | None, hot_head: int | None, *, finality_depth: int,
                 batch_blocks: int, hot_tail: int | None = None, limit: int = 1) -> list[Batch]:
    """Up to ``limit`` batches to finalize next, in order; empty when none is wholly final.

    The first is the batch holding ``cold_watermark + 1`` (a watermark inside a batch, after the
    batch size changed, makes the whole batch again: its already-cold blocks must still be hot),
    or without a watermark the first batch starting at or above ``hot_tail`` (0 if unknown).
    """
    _positive("batch_blocks", batch_blocks)
    _positive("limit", limit)
    final = final_head(hot_head, finality_depth)
    if final is None:
        return []
    if cold_watermark is not None:
        first = batch_of(cold_watermark + 1, batch_blocks).start
    else:
        tail = max(hot_tail or 0, 0)
        first = -(-tail // batch_blocks) * batch_blocks  # the first boundary at or above the tail
    batches: list[Batch] = []
    start = first
    while len(batches) < limit and start + batch_blocks - 1 <= final:
        batches.append(Batch(start, start + batch_blocks - 1))
        start += batch_blocks
    return batches


def advance(cold_watermark: int | None, batch: Batch) -> int:
    """The cold watermark once ``batch`` is committed and current.

    Its end, when the batch continues the cold blocks (it starts at or below ``cold_watermark + 1``)
    or there is no watermark yet; never lower than the watermark (a batch committed again changes
    nothing); unchanged when the batch lies beyond a hole (the blocks between are not cold).
    """
    if cold_watermark is None:
        return batch.end
    if batch.start > cold_watermark + 1:
        return cold_watermark
    return max(cold_watermark, batch.end)


def prune_below(cold_watermark: int | None, overlap_blocks: int) -> int | None:
    """Hot rows of blocks below this number may be deleted (None: none may): ``overlap_blocks``
    blocks at and below the watermark stay hot as well."""
    if overlap_blocks < 0:
        raise BadBatch(f"overlap_blocks must be >= 0, got {overlap_blocks}")
    if cold_watermark is None or cold_watermark - overlap_blocks <= 0:
        return None
    return cold_watermark - overlap_blocks


def pieces(batch: Batch, partition_width: int) -> list[Batch]:
    """``batch`` cut at every multiple of ``partition_width`` (a dataset table's partitions are
    ``truncate[W](block_number)``: a file must lie in one)."""
    _positive("partition_width", partition_width)
    cuts = range(-(-(batch.start + 1) // partition_width) * partition_width, batch.end + 1, partition_width)
    firsts = [batch.start, *cuts]
    lasts = [*(c - 1 for c in cuts), batch.end]
    return [Batch(a, b) for a, b in zip(firsts, lasts, strict=True)]
