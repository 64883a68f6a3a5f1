"""Range splitting: aligned, exact, ordered, stable chunks; bad input is a ConfigError naming it."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.range_splitter import MAX_CHUNKS, BadRange, Chunk, chunk_key, count_chunks, split_range
from tracekit.errors import ConfigError

blocks = st.integers(min_value=0, max_value=10**9)
sizes = st.integers(min_value=1, max_value=10**6)


@st.composite
def ranges(draw: st.DrawFn) -> tuple[int, int, int]:
    size = draw(sizes)
    start = draw(blocks)
    # at most ~2,000 chunks so the properties run fast
    end = start + draw(st.integers(min_value=0, max_value=size * 2_000))
    return start, end, size


@given(ranges())
def test_chunks_cover_the_range_exactly_in_order_without_overlap(r: tuple[int, int, int]) -> None:
    start, end, size = r
    chunks = split_range(start, end, size)
    assert chunks[0].start == start
    assert chunks[-1].end == end
    for a, b in itertools.pairwise(chunks):
        assert b.start == a.end + 1  # contiguous: no gap, no overlap, ascending
    assert sum(c.size for c in chunks) == end - start + 1


@given(ranges())
def test_each_chunk_lies_in_one_aligned_bucket(r: tuple[int, int, int]) -> None:
    start, end, size = r
    chunks = split_range(start, end, size)
    for c in chunks:
        assert c.start // size == c.end // size
    for c in chunks[1:]:
        assert c.start % size == 0  # every chunk but the first starts on a boundary
    for c in chunks[:-1]:
        assert (c.end + 1) % size == 0  # every chunk but the last ends on one
    assert len(chunks) == end // size - start // size + 1


@st.composite
def partitioned(draw: st.DrawFn) -> tuple[int, int, int, int]:
    """A range, a chunk size and a partition width making at most ~4,000 chunks."""
    start, end, size = draw(ranges())
    least = max(1, (end - start) // 2_000)  # at most ~2,000 partitions
    width = draw(st.sampled_from([least, 10_000, 65_536, 10 * size, size + 1]).filter(lambda w: w >= least)
                 | st.integers(min_value=least, max_value=max(least, 10**6)))
    return start, end, size, width


@given(partitioned())
def test_with_partitions_each_chunk_lies_in_one_bucket_and_one_partition(
        r: tuple[int, int, int, int]) -> None:
    start, end, size, width = r
    chunks = split_range(start, end, size, partition_width=width)
    assert chunks[0].start == start and chunks[-1].end == end
    for a, b in itertools.pairwise(chunks):
        assert b.start == a.end + 1
        assert b.start % size == 0 or b.start % width == 0  # cut only at a bucket or a partition
    for c in chunks:
        assert c.start // size == c.end // size
        assert c.start // width == c.end // width
    assert count_chunks(start, end, size, partition_width=width) == len(chunks)
    if width % size == 0:  # the partition is whole buckets: the same cut as without it
        assert chunks == split_range(start, end, size)


@given(partitioned(), st.data())
def test_with_partitions_stable_under_re_splitting_a_sub_range(r: tuple[int, int, int, int],
                                                               data: st.DataObject) -> None:
    start, end, size, width = r
    lo = data.draw(st.integers(min_value=start, max_value=end))
    hi = data.draw(st.integers(min_value=lo, max_value=end))
    full = split_range(start, end, size, partition_width=width)
    clipped = [Chunk(max(c.start, lo), min(c.end, hi)) for c in full if c.end >= lo and c.start <= hi]
    assert split_range(lo, hi, size, partition_width=width) == clipped


def test_partition_examples() -> None:
    assert split_range(9_000, 12_999, 3_000, partition_width=10_000) == [
        Chunk(9_000, 9_999), Chunk(10_000, 11_999), Chunk(12_000, 12_999)]
    assert split_range(0, 25_000, 40_000, partition_width=10_000) == [
        Chunk(0, 9_999), Chunk(10_000, 19_999), Chunk(20_000, 25_000)]
    assert split_range(0, 29_999, 2_500, partition_width=10_000) == split_range(0, 29_999, 2_500)
    with pytest.raises(BadRange, match="partition_width must be >= 1, got 0"):
        split_range(0, 9, 5, partition_width=0)


def test_too_many_partitions_say_no_chunk_size_helps() -> None:
    with pytest.raises(BadRange, match=r"no chunk size makes fewer than 11 \(one per 10-block partition\)"):
        split_range(0, 109, 1_000, partition_width=10, max_chunks=5)
    with pytest.raises(BadRange, match="use a larger chunk_size \\(at least 10\\)") as info:
        split_range(0, 49, 3, partition_width=10, max_chunks=5)  # 9 or 11 would still cut 10 times
    assert len(split_range(0, 49, 10, partition_width=10, max_chunks=5)) == 5
    assert "at least" in str(info.value)


@given(partitioned())
def test_with_partitions_the_suggested_chunk_size_fits_the_cap(r: tuple[int, int, int, int]) -> None:
    start, end, size, width = r
    cap = 7
    try:
        split_range(start, end, size, partition_width=width, max_chunks=cap)
    except BadRange as exc:
        if "use a larger chunk_size" in str(exc):
            suggested = int(str(exc).rpartition("at least ")[2].rstrip(")"))
            assert len(split_range(start, end, suggested, partition_width=width, max_chunks=cap)) <= cap
        else:
            assert end // width - start // width + 1 > cap


@given(ranges(), st.data())
def test_stable_under_re_splitting_a_sub_range(r: tuple[int, int, int], data: st.DataObject) -> None:
    """A block lands in the same chunk whatever range was asked: sub-range chunks are the full
    range's chunks clipped to the sub-range."""
    start, end, size = r
    lo = data.draw(st.integers(min_value=start, max_value=end))
    hi = data.draw(st.integers(min_value=lo, max_value=end))
    full = split_range(start, end, size)
    clipped = [Chunk(max(c.start, lo), min(c.end, hi)) for c in full if c.end >= lo and c.start <= hi]
    assert split_range(lo, hi, size) == clipped
    # interior chunks of the sub-range are identical objects' values of the full split
    inner = [c for c in split_range(lo, hi, size) if c.start % size == 0 and (c.end + 1) % size == 0]
    assert set(inner) <= set(full)


@given(ranges())
def test_deterministic(r: tuple[int, int, int]) -> None:
    assert split_range(*r) == split_range(*r)


def test_examples() -> None:
    assert split_range(0, 9, 5) == [Chunk(0, 4), Chunk(5, 9)]
    assert split_range(3, 12, 5) == [Chunk(3, 4), Chunk(5, 9), Chunk(10, 12)]
    assert split_range(7, 7, 1000) == [Chunk(7, 7)]
    assert split_range(999, 1000, 1000) == [Chunk(999, 999), Chunk(1000, 1000)]
    assert Chunk(5, 9).size == 5


@pytest.mark.parametrize(
    ("args", "names"),
    [
        ((-1, 10, 5), "start_block must be >= 0, got -1"),
        ((10, 9, 5), "end_block must be >= start_block (10), got 9"),
        ((0, 10, 0), "chunk_size must be >= 1, got 0"),
        ((0, 10, -3), "chunk_size must be >= 1, got -3"),
        ((0.5, 10, 5), "start_block must be an integer, got 0.5"),
        ((0, "10", 5), "end_block must be an integer, got '10'"),
        ((0, 10, True), "chunk_size must be an integer, got True"),
    ],
)
def test_bad_inputs_raise_a_config_error_naming_the_value(args: tuple[object, ...], names: str) -> None:
    with pytest.raises(BadRange) as info:
        split_range(*args)  # type: ignore[arg-type]
    assert str(info.value) == names
    assert isinstance(info.value, ConfigError)


def test_too_many_chunks_is_refused_with_a_usable_size() -> None:
    with pytest.raises(BadRange, match=r"2000001 chunks, more than the limit of 1000000.*at least 3"):
        split_range(0, 2_000_000, 1)
    assert len(split_range(0, MAX_CHUNKS - 1, 1)) == MAX_CHUNKS
    with pytest.raises(BadRange, match="more than the limit of 10"):
        split_range(0, 100, 5, max_chunks=10)


@given(ranges())
def test_suggested_chunk_size_fits_the_cap(r: tuple[int, int, int]) -> None:
    start, end, _ = r
    cap = 7
    n = end - start + 1
    suggested = -(-n // (cap - 1))
    assert len(split_range(start, end, suggested, max_chunks=cap)) <= cap


def test_chunk_validates_itself() -> None:
    with pytest.raises(BadRange, match="chunk end must be >= its start 5, got 4"):
        Chunk(5, 4)
    with pytest.raises(BadRange, match="chunk start must be >= 0, got -1"):
        Chunk(-1, 4)


def test_chunk_key() -> None:
    assert chunk_key("monad_testnet", Chunk(0, 999)) == "monad_testnet__00000000_to_00000999"
    assert chunk_key("network_7", Chunk(123_456_789, 123_456_789)) == "network_7__123456789_to_123456789"
    for bad in ("", "Monad", "a__b", "a/b", "_a", "a_", "a b"):
        with pytest.raises(BadRange, match="chain name"):
            chunk_key(bad, Chunk(0, 1))


@given(ranges())
def test_chunk_keys_are_unique_and_sort_like_the_chunks(r: tuple[int, int, int]) -> None:
    start, end, size = r
    chunks = split_range(start, end, size)
    keys = [chunk_key("ethereum", c) for c in chunks]
    assert len(set(keys)) == len(keys)
    if end < 10**8:  # zero-padded to 8 digits: lexicographic order holds below 10^8
        assert keys == sorted(keys)


@given(ranges(), st.integers(min_value=1, max_value=3_000))
def test_counting_is_the_same_cut_as_splitting(r: tuple[int, int, int], cap: int) -> None:
    try:
        chunks = split_range(*r, max_chunks=cap)
    except BadRange as exc:
        with pytest.raises(BadRange) as counted:
            count_chunks(*r, max_chunks=cap)
        assert str(counted.value) == str(exc)
    else:
        assert count_chunks(*r, max_chunks=cap) == len(chunks)
