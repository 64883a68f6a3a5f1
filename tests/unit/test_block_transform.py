"""JSON-RPC replies -> event records: the happy path, and bad RPC data named precisely."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from operators.block_follower.reorg import BlockRef, Reorg
from operators.block_follower.transform import block_key, block_record, reorg_key, reorg_record
from tracekit.avro.wire import AvroCodec
from tracekit.errors import BadRpcData

H = "0x" + "ab" * 32
P = "0x" + "cd" * 32
TX = "0x" + "ef" * 32
ADDR = "0x" + "11" * 20

BLOCK: dict[str, Any] = {
    "number": "0x10",
    "hash": H.upper().replace("0X", "0x"),
    "parentHash": P,
    "timestamp": "0x6560",
    "miner": ADDR,
    "gasUsed": "0x5208",
    "gasLimit": "0x1c9c380",
    "baseFeePerGas": "0x7",
    "extraData": "0x",
    "transactions": [
        {
            "hash": TX,
            "nonce": "0x0",
            "from": ADDR,
            "to": None,
            "value": "0xde0b6b3a7640000",
            "input": "0x60",
            "gas": "0x5208",
            "gasPrice": "0x9",
            "maxFeePerGas": "0xa",
            "maxPriorityFeePerGas": "0x1",
            "type": "0x2",
        }
    ],
}
RECEIPTS: list[dict[str, Any]] = [
    {
        "transactionHash": TX,
        "status": "0x1",
        "gasUsed": "0x5208",
        "effectiveGasPrice": "0x8",
        "contractAddress": ADDR,
        "logs": [{"logIndex": "0x0", "address": ADDR, "topics": [H, P], "data": "0x01"}],
    }
]


def test_block_record_maps_cryo_columns_and_round_trips_through_avro() -> None:
    fetched = block_record(10143, BLOCK, RECEIPTS, observed_at_ms=123)
    rec = fetched.record
    assert fetched.ref == BlockRef(16, H, P)
    assert rec["block_hash"] == H  # lower-cased
    assert rec["idempotency_key"] == block_key(10143, 16, H) == f"10143:block:16:{H}"
    tx = rec["transactions"][0]
    assert tx["value"] == str(10**18) and tx["to_address"] is None and tx["success"] is True
    assert tx["contract_address"] == ADDR and tx["transaction_type"] == 2 and tx["gas_used"] == "21000"
    log = rec["logs"][0]
    assert (log["topic0"], log["topic1"], log["topic2"], log["topic3"]) == (H, P, None, None)
    codec = AvroCodec()
    assert codec.decode(codec.encode("trace.chain.Block", rec)) == ("trace.chain.Block", rec)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b, r: b.update(number="16"), "block: field 'number' should be a hex quantity"),
        (lambda b, r: b.update(hash=None), "block 16: field 'hash' should be a hex string"),
        (lambda b, r: b.update(transactions=[TX]), "transaction 0 is not an object"),
        (lambda b, r: r.clear(), "block 16: expected 1 receipts, got 0"),
        (lambda b, r: r[0].update(transactionHash=H), "receipt is for another transaction"),
        (lambda b, r: b["transactions"][0].update(value="lots"), "field 'value' should be a hex quantity"),
        (lambda b, r: r[0]["logs"][0].update(topics=[H] * 5), "'topics' should be a list of at most 4"),
        (lambda b, r: r[0].update(logs=None), "receipt field 'logs' should be a list"),
    ],
)
def test_bad_rpc_data_is_named(mutate: Any, message: str) -> None:
    block, receipts = copy.deepcopy(BLOCK), copy.deepcopy(RECEIPTS)
    mutate(block, receipts)
    with pytest.raises(BadRpcData, match=message.replace("(", r"\(")):
        block_record(10143, block, receipts, observed_at_ms=0)


def test_reorg_key_is_deterministic_and_depends_on_the_orphaned_hashes() -> None:
    ancestor = BlockRef(9, "0xa9", "0xa8")
    one = Reorg(ancestor, (BlockRef(10, "0xb1", "0xa9"),), ("0xc1",))
    same = Reorg(ancestor, (BlockRef(10, "0xb1", "0xa9"),), ())
    other = Reorg(ancestor, (BlockRef(10, "0xb2", "0xa9"),), ("0xc1",))
    assert reorg_key(1, one) == reorg_key(1, same) != reorg_key(1, other)
    rec = reorg_record(1, one, detected_at_ms=5)
    assert rec["orphaned_numbers"] == [10] and rec["replacement_hashes"] == ["0xc1"] and rec["depth"] == 1
    codec = AvroCodec()
    assert codec.decode(codec.encode("trace.chain.Reorg", rec)) == ("trace.chain.Reorg", rec)
