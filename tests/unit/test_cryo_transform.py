"""JSON-RPC replies -> cryo's Arrow columns: values, nulls, and errors naming block, row and field."""

from __future__ import annotations

import copy
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.cryo_ingest.columns import BLOCKS, LOGS, SCHEMAS, TRANSACTIONS, file_schema
from operators.cryo_ingest.engines.cryo import CryoSchemaMismatch, cryo_blocks, to_columns
from operators.cryo_ingest.files import file_table
from operators.cryo_ingest.transform import (
    blocks_table,
    decode_hex,
    logs_of_receipts,
    logs_table,
    transactions_table,
)
from operators.range_splitter import Chunk
from tracekit.datasets import contract
from tracekit.errors import BadRpcData, ConformError

H = "0x" + "ab" * 32
A = "0x" + "cd" * 20


def h(i: int) -> str:
    return "0x" + f"{i:064x}"


def a(i: int) -> str:
    return "0x" + f"{i:040x}"


def log(block: int, index: int, topics: int, data: str = "0x") -> dict[str, Any]:
    return {"blockNumber": hex(block), "transactionIndex": "0x0", "logIndex": hex(index),
            "transactionHash": h(1000 + block), "address": a(7), "data": data, "blockHash": h(block),
            "topics": [h(100 + k) for k in range(topics)]}


def tx(block: int, index: int, **fields: Any) -> dict[str, Any]:
    base = {"hash": h(1000 + block * 10 + index), "blockNumber": hex(block), "transactionIndex": hex(index),
            "nonce": "0x5", "from": a(1), "to": a(2), "value": "0x0", "input": "0x", "gas": "0x5208",
            "gasPrice": "0x3b9aca00", "type": "0x2", "maxFeePerGas": "0x77359400",
            "maxPriorityFeePerGas": "0x3b9aca00"}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def receipt(t: dict[str, Any], status: str = "0x1", logs: list[Any] | None = None) -> dict[str, Any]:
    return {"transactionHash": t["hash"], "gasUsed": "0x5208", "status": status, "logs": logs or []}


def block(number: int, txs: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    base = {"number": hex(number), "hash": h(number), "parentHash": h(max(number - 1, 0)), "miner": A,
            "gasUsed": "0x10", "extraData": "0x",
            "timestamp": hex(1_700_000_000 + number), "baseFeePerGas": "0x7", "transactions": txs}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def test_blocks_columns() -> None:
    six = block(6, [tx(6, 0), tx(6, 1)], baseFeePerGas=None, extraData="0x00ff")
    t = blocks_table(10143, [block(5, []), six])
    assert t.schema.equals(BLOCKS)
    assert t.to_pylist() == [
        {"block_hash": bytes.fromhex("00" * 31 + "05"), "parent_hash": bytes.fromhex("00" * 31 + "04"),
         "author": bytes.fromhex("cd" * 20), "block_number": 5, "gas_used": 16, "extra_data": b"",
         "timestamp": 1_700_000_005, "base_fee_per_gas": 7, "chain_id": 10143, "n_transactions": 0},
        {"block_hash": bytes.fromhex("00" * 31 + "06"), "parent_hash": bytes.fromhex("00" * 31 + "05"),
         "author": bytes.fromhex("cd" * 20), "block_number": 6, "gas_used": 16, "extra_data": b"\x00\xff",
         "timestamp": 1_700_000_006, "base_fee_per_gas": None, "chain_id": 10143, "n_transactions": 2},
    ]
    hashes_only = block(7, [h(1), h(2), h(3)])  # eth_getBlockByNumber(n, false)
    assert blocks_table(1, [hashes_only]).column("n_transactions").to_pylist() == [3]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("parentHash", "0x" + "ab" * 31, "block 5: field 'parentHash' should be 32 bytes, got 31"),
    ("parentHash", None, "block 5: field 'parentHash' is missing"),
    ("transactions", None, "block 5: field 'transactions' is missing"),
    ("transactions", "0x2", "block 5: field 'transactions' is malformed"),
])
def test_bad_block_fields_name_the_block(field: str, value: Any, message: str) -> None:
    with pytest.raises(BadRpcData, match=message):
        blocks_table(1, [block(5, [], **{field: value})])


def test_transactions_columns() -> None:
    legacy = tx(9, 0, type="0x0", maxFeePerGas=None, maxPriorityFeePerGas=None, value=hex(2**200 + 1),
                input="0x0000ff00", to=None)
    typed = tx(9, 1, value="0x1")
    b = block(9, [legacy, typed])
    t = transactions_table(1, [b], [[receipt(legacy, "0x0"), receipt(typed)]])
    assert t.schema.equals(TRANSACTIONS)
    rows = t.to_pylist()
    assert rows[0]["to_address"] is None
    assert rows[0]["value_binary"] == (2**200 + 1).to_bytes(32, "big")
    assert rows[0]["value_string"] == str(2**200 + 1)
    assert rows[0]["value_f64"] == float(2**200 + 1)
    assert rows[0]["transaction_type"] == 0
    assert rows[0]["max_fee_per_gas"] is None and rows[0]["max_priority_fee_per_gas"] is None
    assert rows[0]["success"] is False
    counts = ("n_input_bytes", "n_input_zero_bytes", "n_input_nonzero_bytes")
    assert [rows[0][c] for c in counts] == [4, 3, 1]
    assert rows[1]["success"] is True
    assert rows[1]["value_binary"] == (1).to_bytes(32, "big")
    assert rows[1]["transaction_index"] == 1
    assert rows[1]["gas_used"] == 21000
    assert [r["block_number"] for r in rows] == [9, 9]


def test_logs_columns_and_topics() -> None:
    logs = [log(3, i, topics=i, data="0x" + "01" * i) for i in range(5)]
    t = logs_table(1, logs)
    assert t.schema.equals(LOGS)
    for i, row in enumerate(t.to_pylist()):
        assert [row[f"topic{k}"] is not None for k in range(4)] == [k < i for k in range(4)]
        assert row["data"] == b"\x01" * i
        assert row["log_index"] == i


def test_logs_of_receipts_keep_the_order() -> None:
    t1, t2 = tx(1, 0), tx(1, 1)
    receipts = [[receipt(t1, logs=[log(1, 0, 1)]), receipt(t2, logs=[log(1, 1, 2), log(1, 2, 0)])]]
    assert [lg["logIndex"] for lg in logs_of_receipts(receipts)] == ["0x0", "0x1", "0x2"]


def test_empty_inputs_give_empty_tables_with_the_schema() -> None:
    assert blocks_table(1, []).schema.equals(BLOCKS)
    assert transactions_table(1, [], []).num_rows == 0
    assert logs_table(1, []).schema.equals(LOGS)


@given(
    value=st.integers(min_value=0, max_value=2**256 - 1),
    data=st.binary(max_size=64),
    number=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_values_round_trip(value: int, data: bytes, number: int) -> None:
    t = tx(0, 0, value=hex(value), input="0x" + data.hex())
    row = transactions_table(1, [block(number, [t])], [[receipt(t)]]).to_pylist()[0]
    assert int.from_bytes(row["value_binary"], "big") == int(row["value_string"]) == value
    assert row["value_f64"] == float(value)
    assert row["input"] == data
    assert row["n_input_zero_bytes"] == data.count(0)
    assert row["n_input_bytes"] == row["n_input_zero_bytes"] + row["n_input_nonzero_bytes"] == len(data)
    assert row["block_number"] == number


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"timestamp": None}, "block 12: field 'timestamp' is missing"),
        ({"timestamp": "0xzz"}, "block 12: field 'timestamp' is malformed"),
        ({"timestamp": "12"}, "block 12: field 'timestamp' is malformed .*0x prefix"),
        ({"gasUsed": 5}, "block 12: field 'gasUsed' is malformed"),
        ({"hash": "0x1234"}, "block 12: field 'hash' should be 32 bytes, got 2"),
        ({"miner": H}, "block 12: field 'miner' should be 20 bytes, got 32"),
        ({"extraData": "0xabc"}, "block 12: field 'extraData' is malformed"),
        ({"timestamp": hex(2**32)}, "block 12: field 'timestamp' is malformed .*too large"),
    ],
)
def test_bad_block_fields_name_block_and_field(change: dict[str, Any], message: str) -> None:
    good = block(11, [])
    bad = block(12, [], **change)  # a None value drops the field
    with pytest.raises(BadRpcData, match=message):
        blocks_table(1, [good, bad])


def test_a_block_that_is_not_an_object() -> None:
    with pytest.raises(BadRpcData, match=r"block #1 of the batch: expected a JSON object, got list"):
        blocks_table(1, [block(1, []), []])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"from": "0x12"}, r"block 4 transaction 1 \(0x[0-9a-f]{64}\): field 'from' should be 20 bytes"),
        ({"to": "0x" + "00" * 32}, r"block 4 transaction 1 .*field 'to' should be 20 bytes, got 32"),
        ({"value": "-0x1"}, r"block 4 transaction 1 .*field 'value' is malformed"),
        ({"value": hex(2**256)}, r"block 4 transaction 1 .*field 'value' is malformed"),
        ({"nonce": None}, r"block 4 transaction 1 .*field 'nonce' is missing"),
        ({"input": "0xq0"}, r"block 4 transaction 1 .*field 'input' is malformed"),
        ({"type": "two"}, r"block 4 transaction 1 .*field 'type' is malformed"),
    ],
)
def test_bad_transaction_fields_name_block_row_and_field(change: dict[str, Any], message: str) -> None:
    t0 = tx(4, 0)
    t1 = tx(4, 1)
    t1.update(change)
    t1 = {k: v for k, v in t1.items() if v is not None}
    with pytest.raises(BadRpcData, match=message):
        transactions_table(1, [block(4, [t0, t1])], [[receipt(t0), receipt(t1)]])


def test_receipts_must_match_the_transactions() -> None:
    t0, t1 = tx(4, 0), tx(4, 1)
    with pytest.raises(BadRpcData, match=r"block 4: field 'receipts': expected 2, got 1"):
        transactions_table(1, [block(4, [t0, t1])], [[receipt(t0)]])
    with pytest.raises(BadRpcData, match=r"block 4 transaction 1: field 'transactionHash' of its receipt"):
        transactions_table(1, [block(4, [t0, t1])], [[receipt(t0), receipt(t0)]])
    with pytest.raises(BadRpcData, match=r"block 4: field 'transactions' should be a list of full"):
        transactions_table(1, [block(4, [t0["hash"]])], [[receipt(t0)]])  # type: ignore[list-item]
    bad_status = receipt(t0, status="0x2")
    with pytest.raises(BadRpcData, match=r"block 4 transaction 0 .*field 'status' is malformed .*0x0 or 0x1"):
        transactions_table(1, [block(4, [t0])], [[bad_status]])
    no_gas = receipt(t0)
    del no_gas["gasUsed"]
    with pytest.raises(BadRpcData, match=r"block 4 transaction 0 .*field 'gasUsed' is missing"):
        transactions_table(1, [block(4, [t0])], [[no_gas]])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"topics": [H] * 5}, r"block 8 log 1: field 'topics' is malformed .*at most 4"),
        ({"topics": ["0x12"]}, r"block 8 log 1: field 'topics\[0\]' should be 32 bytes, got 1"),
        ({"topics": None}, r"block 8 log 1: field 'topics' is missing"),
        ({"address": H}, r"block 8 log 1: field 'address' should be 20 bytes, got 32"),
        ({"data": "ff"}, r"block 8 log 1: field 'data' is malformed"),
        ({"logIndex": "0x1", "blockNumber": None}, r"block \? log 1: field 'blockNumber' is missing"),
    ],
)
def test_bad_log_fields_name_block_log_and_field(change: dict[str, Any], message: str) -> None:
    bad = log(8, 1, 2)
    bad.update(change)
    bad = {k: v for k, v in bad.items() if v is not None}
    with pytest.raises(BadRpcData, match=message):
        logs_table(1, [log(8, 0, 1), bad])


def test_inputs_are_not_mutated() -> None:
    t = tx(2, 0)
    b, r = block(2, [t]), [[receipt(t, logs=[log(2, 0, 3)])]]
    before = copy.deepcopy((b, r))
    transactions_table(1, [b], r)
    logs_table(1, logs_of_receipts(r))
    assert (b, r) == before


# -- what the files hold ---------------------------------------------------------------------------


def test_file_tables_are_the_contracts_sorted_as_cryo_sorts() -> None:
    t = blocks_table(10143, [block(6, [tx(6, 0)]), block(5, [])])
    out = file_table(t, "blocks")
    assert out.schema.equals(file_schema("blocks")) and out.schema.equals(contract("blocks").arrow_schema())
    number = out.schema.field("block_number")
    assert number.type == pa.int64() and not number.nullable
    assert out.schema.field("n_transactions").type == pa.int32()
    assert out.schema.field("block_hash").type == pa.binary()
    assert out.column("block_number").to_pylist() == [5, 6]
    assert out.column("n_transactions").to_pylist() == [0, 1]
    for dataset in ("transactions", "logs", "traces"):
        assert file_table(SCHEMAS[dataset].empty_table(), dataset).schema.equals(file_schema(dataset))


def test_a_row_that_does_not_fit_the_contract_names_column_and_row() -> None:
    t = logs_table(1, [log(3, 0, 1), log(3, 1, 1)])
    no_hash = t.set_column(t.schema.get_field_index("transaction_hash"), "transaction_hash",
                           pa.array([b"x" * 32, None], pa.large_binary()))
    with pytest.raises(ConformError, match="logs: column 'transaction_hash' is required, but row 1 is null"):
        file_table(no_hash, "logs")


# -- the cryo engine's pure half ------------------------------------------------------------------


def test_cryo_block_ranges_are_end_exclusive() -> None:
    assert cryo_blocks(Chunk(0, 999)) == ["0:1000"]
    assert cryo_blocks(Chunk(7, 7)) == ["7:8"]


def test_cryo_frames_are_cast_to_the_columns() -> None:
    schema = SCHEMAS["logs"]
    as_views = pa.schema([
        pa.field(f.name, pa.binary_view() if f.type == pa.large_binary() else f.type) for f in schema
    ])
    shuffled = as_views.empty_table().select(list(reversed(schema.names)))
    assert to_columns(shuffled, "logs").schema.equals(schema)
    with pytest.raises(CryoSchemaMismatch, match="cryo returned logs columns"):
        to_columns(schema.empty_table().drop_columns(["topic3"]), "logs")
    with pytest.raises(CryoSchemaMismatch, match="do not cast"):
        to_columns(pa.table({n: pa.array([], pa.list_(pa.int8())) for n in schema.names}), "logs")


def test_cryo_blocks_get_the_transaction_counts_added() -> None:
    cryos = BLOCKS.empty_table().drop_columns(["n_transactions"])  # what cryo returns (with parent_hash)
    counts = {"n_transactions": pa.array([], pa.int64())}
    assert to_columns(cryos, "blocks", counts).schema.equals(BLOCKS)
    with pytest.raises(CryoSchemaMismatch, match="cryo returned blocks columns"):
        to_columns(BLOCKS.empty_table(), "blocks", counts)  # cryo never gives n_transactions
    with pytest.raises(ValueError, match="needs the added columns"):
        to_columns(cryos, "blocks")


# -- vectorised hex decoding ----------------------------------------------------------------------


@given(st.lists(st.none() | st.binary(max_size=40), max_size=30))
def test_decode_hex_equals_per_value_decoding(values: list[bytes | None]) -> None:
    hexes = [None if v is None else "0x" + v.hex() for v in values]
    decoded = decode_hex(hexes)
    assert decoded.equals(pa.array(values, type=pa.large_binary()))
    assert decoded.to_pylist() == values
    upper = decode_hex([None if h is None else "0x" + h[2:].upper() for h in hexes])
    assert upper.to_pylist() == values


@pytest.mark.parametrize(
    "bad",
    ["12ab", "0xabc", "0x0x12", "0x12 34", "0x12  34", "0xab\n", "0xzz", "0X12", "0x12x0", "x012"],
)
def test_decode_hex_rejects_malformed_values(bad: str) -> None:
    for values in ([bad], ["0x00", bad, "0xff"], [bad, None]):
        with pytest.raises((ValueError, TypeError)):
            decode_hex(values)


def test_decode_hex_rejects_non_strings() -> None:
    with pytest.raises(TypeError):
        decode_hex(["0x00", 5])
    with pytest.raises(TypeError):
        decode_hex([b"0x00"])
