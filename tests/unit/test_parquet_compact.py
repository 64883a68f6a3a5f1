"""parquet_compact's pure part: partitions of a snapshot's files, which to compact, a partition a
user names, the groups read together, the rows sorted and checked, the payload."""

from __future__ import annotations

import pyarrow as pa
import pytest

from operators.parquet_compact import (
    BadPartition,
    CompactMismatch,
    CompactPayload,
    SnapshotFile,
    check_counts,
    file_name,
    partition_at,
    partition_range,
    partitions,
    read_groups,
    sorted_rows,
    to_compact,
)
from tracekit.datasets import conform, contract
from tracekit.errors import ConfigError

W = 10_000


def _file(first: int, last: int, rows: int = 10, name: str | None = None) -> SnapshotFile:
    return SnapshotFile(first // W * W, first, last, name or f"s3://d/{first}-{last}.parquet", rows, 100)


def test_files_are_grouped_by_partition_in_block_order() -> None:
    files = [_file(20_010, 20_019), _file(0, 9), _file(10_000, 10_099), _file(10, 19), _file(20_000, 20_009)]
    parts = partitions(files, W)
    assert [(p.start, p.end, len(p.files)) for p in parts] == [(0, 9_999, 2), (10_000, 19_999, 1),
                                                                 (20_000, 29_999, 2)]
    first = parts[0]
    assert (first.first_block, first.last_block, first.rows, first.bytes) == (0, 19, 20, 200)
    assert [f.first_block for f in first.files] == [0, 10]
    assert str(first) == "partition 0..9999"


def test_only_partitions_with_enough_files_are_compacted() -> None:
    parts = partitions([_file(0, 9), _file(10, 19), _file(10_000, 10_009)], W)
    assert [p.start for p in to_compact(parts, 2)] == [0]
    assert [p.start for p in to_compact(parts, 1)] == [0, 10_000]
    assert to_compact(parts, 3) == []
    with pytest.raises(BadPartition, match="min_files"):
        to_compact(parts, 0)


def test_a_file_leaving_its_partition_is_refused() -> None:
    with pytest.raises(BadPartition, match=r"not within its partition 0\.\.9999"):
        partitions([SnapshotFile(0, 9_995, 10_004, "s3://d/x", 10, 1)], W)


def test_a_partition_is_named_by_its_first_block() -> None:
    assert partition_range(20_000, W) == (20_000, 29_999)
    assert partition_range(0, 100) == (0, 99)
    with pytest.raises(BadPartition, match=r"block 20005 is not the first block of a partition: .* by 20000"):
        partition_range(20_005, W)
    with pytest.raises(BadPartition, match="block number >= 0"):
        partition_range(-10_000, W)
    parts = partitions([_file(0, 9), _file(10, 19)], W)
    assert partition_at(parts, 0, W, what="blocks version 3").files == parts[0].files
    with pytest.raises(BadPartition, match=r"partition 10000\.\.19999 of blocks version 3 has no rows"):
        partition_at(parts, 10_000, W, what="blocks version 3")
    assert issubclass(BadPartition, ConfigError)


def test_overlapping_files_are_read_together() -> None:
    assert read_groups([_file(10, 19), _file(0, 9), _file(30, 39)]) == [(0, 9), (10, 19), (30, 39)]
    assert read_groups([_file(0, 15), _file(10, 19), _file(19, 25), _file(40, 49)]) == [(0, 25), (40, 49)]
    assert read_groups([_file(0, 100), _file(5, 6)]) == [(0, 100)]
    assert read_groups([]) == []


def test_file_name_is_the_dataset_file_style() -> None:
    assert file_name("monad_testnet", "logs", 0, 9_999) == "monad_testnet__logs__00000000_to_00009999.parquet"


def _logs(pairs: list[tuple[int, int]]) -> pa.Table:
    n = len(pairs)
    return pa.table({
        "block_number": pa.array([b for b, _ in pairs], pa.uint64()),  # as cryo writes it
        "transaction_index": pa.array([0] * n, pa.uint32()),
        "log_index": pa.array([i for _, i in pairs], pa.uint32()),
        "transaction_hash": pa.array([b"t" * 32] * n, pa.large_binary()),
        "address": pa.array([b"a" * 20] * n, pa.binary()),
        "topic0": pa.array([None] * n, pa.binary()), "topic1": pa.array([None] * n, pa.binary()),
        "topic2": pa.array([None] * n, pa.binary()), "topic3": pa.array([None] * n, pa.binary()),
        "data": pa.array([b""] * n, pa.binary()),
        "chain_id": pa.array([10143] * n, pa.uint64()),
    })


def test_rows_are_conformed_and_sorted_by_the_contracts_sort_order() -> None:
    logs = contract("logs")
    rows = _logs([(12, 1), (10, 3), (12, 0), (10, 0), (11, 7)])
    out = sorted_rows(rows, logs, 10, 19)
    assert out.schema == logs.arrow_schema()
    assert list(zip(out["block_number"].to_pylist(), out["log_index"].to_pylist(), strict=True)) == [
        (10, 0), (10, 3), (11, 7), (12, 0), (12, 1)]
    assert sorted_rows(rows.slice(0, 0), logs, 10, 19).num_rows == 0
    assert out.equals(sorted_rows(conform(rows, logs).take([4, 3, 2, 1, 0]), logs, 10, 19))


def test_rows_outside_the_range_are_a_mismatch() -> None:
    with pytest.raises(CompactMismatch, match=r"rows of blocks 10..25 were read for the range 10..19"):
        sorted_rows(_logs([(10, 0), (25, 0)]), contract("logs"), 10, 19)


def test_counts_must_agree() -> None:
    check_counts("logs", expected=5, read=5, written=5)
    with pytest.raises(CompactMismatch, match="4 rows were read, the version's files hold 5"):
        check_counts("logs", expected=5, read=4, written=4)
    with pytest.raises(CompactMismatch, match="3 rows were written, 5 were read"):
        check_counts("logs", expected=5, read=5, written=3)


def _payload(**params: object) -> dict[str, object]:
    base: dict[str, object] = {
        "dataset": "blocks", "start_block": 0, "end_block": 29, "chain_id": 10143, "chain": "monad_testnet",
        "inputs": {"blocks": {"version": 3, "table": "chain.blocks", "snapshot_id": 77}}}
    return {"params": {**base, **params}, "config": {}}


def test_the_payload_pins_the_version_read() -> None:
    params = CompactPayload.parse(_payload()).params
    assert (params.pinned.version, params.pinned.identifier, params.pinned.snapshot_id) == (
        3, ("chain", "blocks"), 77)
    assert params.file_prefix == "monad_testnet"
    assert CompactPayload.parse(_payload(chain=None)).params.file_prefix == "network_10143"


@pytest.mark.parametrize(("change", "message"), [
    ({"end_block": 10_000}, "span more than one partition"),
    ({"end_block": 0, "start_block": 5}, "end_block 0 is below start_block 5"),
    ({"dataset": "logs"}, "inputs does not pin a version of 'logs'"),
    ({"dataset": "nope", "inputs": {"nope": {"version": 1, "table": "chain.nope", "snapshot_id": 1}}},
     "unknown dataset 'nope'"),
    ({"inputs": {"blocks": {"version": 3, "table": "blocks", "snapshot_id": 1}}}, "inputs.blocks.table"),
])
def test_a_bad_payload_is_one_line(change: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=r"parquet_compact: bad task payload at .*") as caught:
        CompactPayload.parse(_payload(**change))
    assert message in str(caught.value) and "\n" not in str(caught.value)
