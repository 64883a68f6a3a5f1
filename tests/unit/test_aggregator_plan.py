"""The Aggregator's planning: whole aligned batches, never above the final head, following the cold
watermark; the watermark only moves forward over contiguous cold blocks; pruning keeps the overlap."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.aggregator.plan import (
    BadBatch,
    Batch,
    advance,
    batch_of,
    final_head,
    next_batches,
    pieces,
    prune_below,
)
from tracekit.errors import ConfigError

blocks = st.integers(min_value=0, max_value=10**9)
sizes = st.integers(min_value=1, max_value=10**5)
depths = st.integers(min_value=0, max_value=1000)
watermarks = st.none() | blocks
limits = st.integers(min_value=1, max_value=50)


@given(watermarks, st.none() | blocks, depths, sizes, st.none() | blocks, limits)
def test_batches_are_whole_aligned_final_and_follow_the_watermark(
        watermark: int | None, head: int | None, depth: int, size: int, tail: int | None, limit: int) -> None:
    batches = next_batches(watermark, head, finality_depth=depth, batch_blocks=size, hot_tail=tail,
                           limit=limit)
    assert len(batches) <= limit
    final = final_head(head, depth)
    for b in batches:
        assert b.start % size == 0 and b.size == size  # a whole aligned range, never a part of one
        assert final is not None and b.end <= final  # every block of it is final
    for a, b in itertools.pairwise(batches):
        assert b.start == a.end + 1  # in order, contiguous
    if batches:
        first = batches[0]
        if watermark is not None:
            assert first.start <= watermark + 1 <= first.end  # the batch holding the next cold block
        else:
            assert first.start >= (tail or 0) and first.start - (tail or 0) < size  # first boundary >= tail
    # none is left out: the batch after the last planned one is not final yet, unless limited
    if len(batches) < limit:
        start = batches[-1].end + 1 if batches else (
            batch_of(watermark + 1, size).start if watermark is not None else -(-(tail or 0) // size) * size)
        assert final is None or start + size - 1 > final


@given(watermarks, blocks, depths, sizes)
def test_planning_is_deterministic_and_a_batch_is_the_same_whatever_the_head(
        watermark: int | None, head: int, depth: int, size: int) -> None:
    now = next_batches(watermark, head, finality_depth=depth, batch_blocks=size, limit=3)
    later = next_batches(watermark, head + 5 * size, finality_depth=depth, batch_blocks=size, limit=3)
    assert now == next_batches(watermark, head, finality_depth=depth, batch_blocks=size, limit=3)
    assert later[:len(now)] == now  # a later head never changes a batch, only adds more


def test_examples() -> None:
    assert next_batches(None, 45, finality_depth=5, batch_blocks=20) == [Batch(0, 19)]
    assert next_batches(None, 45, finality_depth=5, batch_blocks=20, limit=5) == [Batch(0, 19), Batch(20, 39)]
    assert next_batches(19, 45, finality_depth=5, batch_blocks=20) == [Batch(20, 39)]
    assert next_batches(39, 45, finality_depth=5, batch_blocks=20) == []  # 40..59 is not final yet
    assert next_batches(39, 64, finality_depth=5, batch_blocks=20) == [Batch(40, 59)]
    assert next_batches(None, 3, finality_depth=5, batch_blocks=20) == []  # nothing final
    assert next_batches(None, None, finality_depth=5, batch_blocks=20) == []  # nothing hot
    assert next_batches(None, 100, finality_depth=0, batch_blocks=20, hot_tail=21) == [Batch(40, 59)]
    assert next_batches(None, 100, finality_depth=0, batch_blocks=20, hot_tail=40) == [Batch(40, 59)]
    # the batch size changed under a watermark: the whole batch holding the next block again
    assert next_batches(29, 100, finality_depth=0, batch_blocks=20) == [Batch(20, 39)]


@given(watermarks, blocks, sizes)
def test_the_watermark_only_moves_forward_over_contiguous_cold_blocks(
        watermark: int | None, start: int, size: int) -> None:
    batch = Batch(start, start + size - 1)
    after = advance(watermark, batch)
    if watermark is None:
        assert after == batch.end
        return
    assert after is not None and after >= watermark  # never backwards
    if batch.start <= watermark + 1:
        assert after == max(watermark, batch.end)
    else:
        assert after == watermark  # a hole between: those blocks are not cold


def test_advance_examples() -> None:
    assert advance(None, Batch(0, 19)) == 19
    assert advance(19, Batch(20, 39)) == 39
    assert advance(39, Batch(20, 39)) == 39  # committed again
    assert advance(19, Batch(40, 59)) == 19  # 20..39 is not cold


@given(watermarks, st.integers(min_value=0, max_value=10**6))
def test_pruning_keeps_the_overlap(watermark: int | None, overlap: int) -> None:
    below = prune_below(watermark, overlap)
    if below is None:
        assert watermark is None or watermark - overlap <= 0
    else:
        assert watermark is not None and below == watermark - overlap and below > 0
        assert watermark - below >= overlap  # blocks below..watermark stay hot


@given(blocks, st.integers(min_value=1, max_value=50_000), st.integers(min_value=1, max_value=20_000))
def test_pieces_cut_a_batch_at_partition_boundaries(start: int, size: int, width: int) -> None:
    batch = Batch(start, start + size - 1)
    cut = pieces(batch, width)
    assert cut[0].start == batch.start and cut[-1].end == batch.end
    for a, b in itertools.pairwise(cut):
        assert b.start == a.end + 1 and b.start % width == 0
    for p in cut:
        assert p.start // width == p.end // width  # each piece in one partition


def test_bad_inputs_are_config_errors_naming_them() -> None:
    with pytest.raises(ConfigError, match="batch_blocks must be a positive integer, got 0"):
        next_batches(None, 10, finality_depth=0, batch_blocks=0)
    with pytest.raises(BadBatch, match="finality_depth must be >= 0"):
        next_batches(None, 10, finality_depth=-1, batch_blocks=5)
    with pytest.raises(BadBatch, match="overlap_blocks must be >= 0"):
        prune_below(10, -1)
    with pytest.raises(BadBatch, match=r"got 5\.\.4"):
        Batch(5, 4)
