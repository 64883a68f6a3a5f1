"""Hot rows -> each dataset's contract: hex text becomes bytes, numeric the contract's integers, a
uint256 its decimal string, double (and 32 bytes for a transaction's value); the files the
Aggregator writes have the contract's schema, one per partition the batch spans."""

from __future__ import annotations

import io
from decimal import Decimal

import pyarrow.parquet as pq
import pytest

from operators.aggregator.aggregate import batch_files
from operators.aggregator.check import HotGap, HotInconsistent, check_blocks, check_counts
from operators.aggregator.payload import AggregatePayload
from operators.aggregator.plan import Batch
from operators.aggregator.transform import DATASETS, HOT_COLUMNS, BadHotRow, dataset_table
from tracekit.datasets import contract
from tracekit.errors import ConfigError, ConformError

H = "0x" + "ab" * 32
P = "0x" + "cd" * 32
A = "0x" + "12" * 20
BIG = 2**200 + 7


def _block(n: int) -> tuple[object, ...]:
    return (n, H, P, A, Decimal(21000), "0x", 1_700_000_000 + n, Decimal(7), 1, 31337)


def test_blocks_convert_to_the_contract() -> None:
    table = dataset_table("blocks", [_block(5), _block(6)])
    assert table.schema.equals(contract("blocks").arrow_schema())
    row = table.to_pylist()[0]
    assert row["block_hash"] == bytes.fromhex("ab" * 32) and row["author"] == bytes.fromhex("12" * 20)
    assert (row["gas_used"], row["base_fee_per_gas"], row["n_transactions"]) == (21000, 7, 1)
    assert row["extra_data"] == b""


def test_transactions_keep_a_uint256_value_three_ways_and_count_input_bytes() -> None:
    tx = (9, 0, H, Decimal(3), A, None, Decimal(BIG), "0x00ff0000", Decimal(50_000), Decimal(21_000),
          Decimal(10**9), 2, Decimal(1), Decimal(2), True, 31337)
    (row,) = dataset_table("transactions", [tx]).to_pylist()
    assert row["value_binary"] == BIG.to_bytes(32, "big") and row["value_string"] == str(BIG)
    assert row["value_f64"] == float(BIG) and row["to_address"] is None
    assert (row["n_input_bytes"], row["n_input_zero_bytes"], row["n_input_nonzero_bytes"]) == (4, 3, 1)
    assert row["input"] == b"\x00\xff\x00\x00" and row["success"] is True and row["transaction_type"] == 2


def test_transfers_and_stake_changes_take_the_contract_names() -> None:
    zero = "0x" + "00" * 20
    transfer = (4, H, 1_700_000_004, 2, H, A, zero, A, Decimal(BIG), "mint", 18, Decimal("2.5"), 31337)
    (row,) = dataset_table("transfers", [transfer]).to_pylist()
    assert row["erc20"] == bytes.fromhex("12" * 20) and row["value_string"] == str(BIG)
    assert (row["action"], row["decimals"], row["usd_value"]) == ("mint", 18, 2.5)
    stake = (4, H, 1_700_000_004, 3, H, A, A, A, Decimal(10), "delegate", 31337)
    (row,) = dataset_table("stake_changes", [stake]).to_pylist()
    assert (row["amount_string"], row["amount_f64"], row["action"]) == ("10", 10.0, "delegate")


def test_every_dataset_converts_no_rows_to_an_empty_table_of_its_contract() -> None:
    for dataset in DATASETS:
        table = dataset_table(dataset, [])
        assert table.num_rows == 0 and table.schema.equals(contract(dataset).arrow_schema())
        assert set(HOT_COLUMNS[dataset]) >= {"block_number", "chain_id"}


def test_bad_values_name_the_dataset_column_and_block() -> None:
    bad = list(_block(7))
    bad[1] = "0xzz"
    with pytest.raises(BadHotRow, match="blocks: column 'block_hash' of block 7: '0xzz'"):
        dataset_table("blocks", [_block(6), tuple(bad)])
    missing = list(_block(8))
    missing[4] = None  # gas_used is required
    with pytest.raises(ConformError, match="gas_used"):
        dataset_table("blocks", [tuple(missing)])
    with pytest.raises(BadHotRow, match="no hot table holds 'traces'"):
        dataset_table("traces", [])


def test_files_are_cut_at_partitions_and_hold_the_contract() -> None:
    rows = [_block(n) for n in range(9_990, 10_010)]
    files = batch_files("anvil", Batch(9_990, 10_009), {"blocks": dataset_table("blocks", rows)})
    assert [(f.name, f.start, f.end, f.rows) for f in files] == [
        ("anvil__blocks__00009990_to_00009999.parquet", 9_990, 9_999, 10),
        ("anvil__blocks__00010000_to_00010009.parquet", 10_000, 10_009, 10)]
    table = pq.read_table(io.BytesIO(files[1].data))
    assert table.schema.equals(contract("blocks").arrow_schema())
    assert table["block_number"].to_pylist() == list(range(10_000, 10_010))


def test_checks_refuse_gaps_broken_links_and_missing_rows() -> None:
    h = [f"0x{n:064x}" for n in range(12)]
    chain = [(n, h[n], h[n - 1] if n else "0x" + "00" * 32) for n in range(10, 12)]
    check_blocks(1, Batch(10, 11), chain)
    with pytest.raises(HotGap, match=r"misses blocks 11 of the batch blocks 10\.\.11"):
        check_blocks(1, Batch(10, 11), chain[:1])
    with pytest.raises(HotGap, match=r"misses blocks 12\.\.14, 16 of"):
        check_blocks(1, Batch(10, 16), [*chain, (15, h[0], h[0])])
    with pytest.raises(HotInconsistent, match="blocks 11 of the batch"):
        check_blocks(1, Batch(10, 11), [chain[0], (11, h[11], h[3])])
    check_counts(1, "logs", {10: 2, 11: 0}, [(10,), (10,)])
    with pytest.raises(HotInconsistent, match=r"hot.logs of chain 1 lacks rows of blocks 10 \(1 of 2\)"):
        check_counts(1, "logs", {10: 2, 11: 0}, [(10,)])


def test_the_payload_is_validated_once_with_one_line_errors() -> None:
    payload = AggregatePayload.parse({"params": {"chain_id": 1, "chain": "anvil", "start_block": 0,
                                                 "end_block": 19, "job": "ignored"}, "config": {}})
    assert payload.params.batch == Batch(0, 19) and payload.config.datasets == DATASETS
    with pytest.raises(ConfigError, match="params: Value error, end_block 3 is below start_block 9"):
        AggregatePayload.parse({"params": {"chain_id": 1, "chain": "anvil", "start_block": 9,
                                           "end_block": 3}})
    with pytest.raises(ConfigError, match="no hot table holds traces"):
        AggregatePayload.parse({"params": {"chain_id": 1, "chain": "anvil", "start_block": 0, "end_block": 3},
                                "config": {"datasets": ["blocks", "traces"]}})
