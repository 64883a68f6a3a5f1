"""Hot rows -> each dataset's contract: hex text becomes bytes, numeric the contract's integers, a
uint256 its decimal string, double (and 32 bytes for a transaction's value); the files the
Aggregator writes have the contract's schema, one per partition the batch spans. The vectorised
conversion of the hot rows in Arrow (``hot_table``) gives the same tables as the row-by-row one,
and the same errors."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.aggregator import transform
from operators.aggregator.aggregate import batch_files, canonical_rows, rows_per_block
from operators.aggregator.check import HotGap, HotInconsistent, check_blocks, check_counts, check_found
from operators.aggregator.payload import AggregatePayload
from operators.aggregator.plan import Batch
from operators.aggregator.transform import (
    DATASETS,
    HOT_COLUMNS,
    HOT_TYPES,
    BadHotRow,
    dataset_table,
    hot_rows,
    hot_schema,
    hot_table,
)
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


# ---------------------------------------------------------------- the vectorised path (hot_table)


def _arrow(dataset: str, rows: Sequence[Sequence[object]], chunks: int = 1) -> pa.Table:
    """``rows`` as the aggregator reads them into Arrow (``numeric`` as its decimal text), in
    ``chunks`` chunks."""
    schema = hot_schema(HOT_TYPES[dataset])
    numeric = [HOT_TYPES[dataset][c] == "numeric" for c in HOT_COLUMNS[dataset]]
    text = [tuple(None if v is None else str(v) if n else v for v, n in zip(row, numeric, strict=True))
            for row in rows]
    step = max(1, -(-len(text) // chunks))
    parts = [pa.Table.from_pylist([dict(zip(schema.names, r, strict=True)) for r in text[i:i + step]],
                                  schema=schema) for i in range(0, len(text), step)]
    return pa.concat_tables(parts) if parts else schema.empty_table()


def _no_rows_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(dataset: str, rows: object) -> pa.Table:
        raise AssertionError(f"{dataset} went row by row")
    monkeypatch.setattr(transform, "dataset_table", refused)


hexes = st.binary(max_size=40).map(lambda b: "0x" + b.hex())
u256 = st.integers(0, 2**256 - 1) | st.integers(0, 10**30)
longs = st.integers(0, 2**63 - 1)
index = st.integers(0, 2**31 - 1)


@st.composite
def tx_rows(draw: st.DrawFn) -> tuple[object, ...]:
    return (draw(longs), draw(index), draw(hexes), Decimal(draw(longs)), draw(hexes), draw(st.none() | hexes),
            Decimal(draw(u256)), draw(hexes), Decimal(draw(longs)), draw(st.none() | longs.map(Decimal)),
            draw(st.none() | longs.map(Decimal)), draw(st.none() | st.integers(0, 3)),
            draw(st.none() | longs.map(Decimal)), draw(st.none() | longs.map(Decimal)),
            draw(st.none() | st.booleans()), draw(longs))


@st.composite
def transfer_rows(draw: st.DrawFn) -> tuple[object, ...]:
    usd = st.none() | st.decimals(allow_nan=False, allow_infinity=False, places=6, min_value=0,
                                  max_value=10**12)
    amount = Decimal(draw(u256 | st.integers(-(10**20), -1)))  # a negative one has no 32 bytes, but converts
    return (draw(longs), draw(hexes), draw(longs), draw(index), draw(hexes), draw(hexes), draw(hexes),
            draw(hexes), amount, draw(st.sampled_from(["transfer", "mint", "burn"])),
            draw(st.none() | st.integers(0, 36)), draw(usd), draw(longs))


@settings(max_examples=60, deadline=None)
@given(st.lists(tx_rows(), max_size=12), st.lists(transfer_rows(), max_size=12), st.integers(1, 3))
def test_hot_table_equals_the_row_by_row_conversion(txs: list[tuple[object, ...]],
                                                   transfers: list[tuple[object, ...]], chunks: int) -> None:
    for dataset, rows in (("transactions", txs), ("transfers", transfers)):
        expected = dataset_table(dataset, rows)
        got = hot_table(dataset, _arrow(dataset, rows, chunks))
        assert got.schema.equals(expected.schema) and got.equals(expected), dataset


def test_hot_table_converts_usual_hot_values_a_column_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    txs = [(9, i, H, Decimal(3), A, None if i == 1 else A, Decimal(v), inp, Decimal(50_000), None,
            Decimal(10**9), 2, None, Decimal(2), i != 2, 31337)
           for i, (v, inp) in enumerate([(0, "0x"), (BIG, "0x00ff0000"), (10**76 - 1, "0xabcdef00")])]
    logs = [(5, 0, i, H, A, H if i else None, None, P, None, "0x" + "00" * i, 31337) for i in range(4)]
    transfers = [(4, H, 1_700_000_004, i, H, A, "0x" + "00" * 20, A, Decimal(BIG * i), "mint", None,
                  Decimal("2.5") if i else None, 31337) for i in range(3)]
    stakes = [(4, H, 1_700_000_004, i, H, A, A, A, Decimal(10 * i), "delegate", 31337) for i in range(3)]
    rows: dict[str, Sequence[Sequence[object]]] = {
        "blocks": [_block(5), _block(6)], "transactions": txs, "logs": logs, "transfers": transfers,
        "stake_changes": stakes}
    expected = {dataset: dataset_table(dataset, rows[dataset]) for dataset in DATASETS}
    _no_rows_path(monkeypatch)
    for dataset in DATASETS:
        assert hot_table(dataset, _arrow(dataset, rows[dataset], chunks=2)).equals(expected[dataset]), dataset
    (row,) = hot_table("transactions", _arrow("transactions", txs[1:2])).to_pylist()
    assert row["value_binary"] == BIG.to_bytes(32, "big") and row["value_string"] == str(BIG)
    assert (row["n_input_bytes"], row["n_input_zero_bytes"], row["n_input_nonzero_bytes"]) == (4, 3, 1)
    for dataset in DATASETS:
        assert hot_table(dataset, _arrow(dataset, [])).schema.equals(contract(dataset).arrow_schema())


@pytest.mark.parametrize("hex_value", ["0XABCD", "abcd", "0xab cd", "0x ab"])
def test_other_spellings_go_row_by_row_with_the_same_result(hex_value: str) -> None:
    rows = [(5, 0, 0, H, A, hex_value, None, None, None, "0x", 31337)]
    assert hot_table("logs", _arrow("logs", rows)).equals(dataset_table("logs", rows))


def test_values_that_do_not_convert_are_named_as_row_by_row() -> None:
    tx = (9, 0, H, Decimal(3), A, None, Decimal(1), "0x", Decimal(50_000), None, None, 2, None, None, True, 1)
    bad: list[tuple[int, object, str]] = [
        (2, "0xzz", "column 'transaction_hash' of block 9: '0xzz' does not convert"),
        (2, "0xabc", "column 'transaction_hash' of block 9: '0xabc' does not convert"),
        (6, Decimal(2**256), "column 'value' of block 9"),
        (6, Decimal(-1), "column 'value' of block 9"),
        (3, Decimal(2**63), "column 'nonce' holds a value that does not fit nonce")]
    for position, value, message in bad:
        row: list[object] = list(tx)
        row[position] = value
        with pytest.raises(BadHotRow, match=re.escape(message)):
            dataset_table("transactions", [tuple(row)])
        with pytest.raises(BadHotRow, match=re.escape(message)):
            hot_table("transactions", _arrow("transactions", [tx, tuple(row)]))
    missing = list(tx)
    missing[4] = None  # from_address is required
    with pytest.raises(ConformError, match="from_address"):
        hot_table("transactions", _arrow("transactions", [tuple(missing)]))


def test_hot_rows_are_the_rows_psycopg_reads() -> None:
    tx = (9, 0, H, Decimal(3), A, None, Decimal(BIG), "0x", Decimal(50_000), None, None, 2, None, None,
          True, 1)
    assert hot_rows("transactions", _arrow("transactions", [tx])) == [tx]


def test_only_the_canonical_blocks_rows_are_kept_and_counted() -> None:
    hashes = pa.array(["0xa0", "0xa1", "0xa2"])
    table = pa.table({"block_number": pa.array([10, 10, 11, 12, 12], pa.int64()),
                      "block_hash": ["0xa0", "0xa0", "0xb1", "0xa2", "0xa2"], "log_index": [0, 1, 0, 0, 1]})
    kept = canonical_rows(table, Batch(10, 12), hashes)
    assert kept["log_index"].to_pylist() == [0, 1, 0, 1] and rows_per_block(kept) == {10: 2, 12: 2}
    assert canonical_rows(kept, Batch(10, 12), hashes) is kept
    with pytest.raises(HotInconsistent, match=r"lacks rows of blocks 11 \(0 of 1\)"):
        check_found(1, "logs", {10: 2, 11: 1, 12: 2}, rows_per_block(kept))
