"""What one block puts on the enrichment topics: each record on its topic, then each topic's BlockEnd."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from streams.enrich.model import STAKE_CHANGE, TRANSFER, ChainEvent
from streams.enrich.records import block_records
from tracekit.avro.wire import AvroCodec
from tracekit.names import BLOCK_END
from tracekit.names import STAKE_CHANGE as STAKE_CHANGE_RECORD
from tracekit.names import TRANSFER as TRANSFER_RECORD

BLOCK = {"chain_id": 7, "block_number": 12, "block_hash": "0xb12", "parent_hash": "0xb11", "timestamp": 99}


def event(kind: str, log_index: int) -> ChainEvent:
    return ChainEvent(
        event_type=kind, key=f"7:{kind}:12:0xb12:{log_index}", chain_id=7, block_number=12,
        block_hash="0xb12", timestamp=99, log_index=log_index, transaction_hash="0xt", token="0xc",
        from_address="0xa", to_address="0xb", amount=10**21,
        action="transfer" if kind == TRANSFER else "delegate",
        decimals=18 if kind == TRANSFER else None, usd_value=Decimal("2.5") if kind == TRANSFER else None,
        from_labels=frozenset({"fund"}),
    )


def test_records_go_to_their_topic_in_order_and_each_topic_ends_the_block() -> None:
    out = block_records(BLOCK, [event(TRANSFER, 0), event(STAKE_CHANGE, 1), event(TRANSFER, 3)],
                        transfers="t", stake_changes="s")
    assert [(topic, name, r.get("log_index")) for topic, name, r in out] == [
        ("t", TRANSFER_RECORD, 0), ("s", STAKE_CHANGE_RECORD, 1), ("t", TRANSFER_RECORD, 3),
        ("t", BLOCK_END, None), ("s", BLOCK_END, None),
    ]
    ends: dict[str, dict[str, Any]] = {topic: r for topic, name, r in out if name == BLOCK_END}
    assert ends["t"] == {"chain_id": 7, "block_number": 12, "block_hash": "0xb12", "parent_hash": "0xb11",
                         "timestamp": 99, "record_count": 2, "idempotency_key": "7:block_end:12:0xb12"}
    assert ends["s"]["record_count"] == 1
    codec = AvroCodec()
    for _, name, record in out:  # each one fits its contract
        assert codec.decode(codec.encode(name, record)) == (name, record)


def test_a_block_without_events_still_ends_on_both_topics() -> None:
    out = block_records(BLOCK, [], transfers="t", stake_changes="s")
    assert [(t, name, r["record_count"]) for t, name, r in out] == [("t", BLOCK_END, 0), ("s", BLOCK_END, 0)]
