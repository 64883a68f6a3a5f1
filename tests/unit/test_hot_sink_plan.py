"""The sink's pure planning: reorgs are barriers, a height is written once per run, bad events named."""

from __future__ import annotations

from typing import Any

import pytest

from streams.hot_sink.plan import InvalidEvent, block_rows, check_event, plan
from streams.hot_tables.plan import ApplyReorg, WriteRun
from tracekit.names import BLOCK, REORG


def blk(n: int, h: str, chain: int = 1) -> dict[str, Any]:
    return {
        "chain_id": chain,
        "block_number": n,
        "block_hash": h,
        "parent_hash": "0x0",
        "timestamp": 1,
        "author": None,
        "gas_used": "0",
        "gas_limit": "0",
        "base_fee_per_gas": None,
        "extra_data": None,
        "observed_at_ms": 1_700_000_000_000,
        "idempotency_key": f"{chain}:block:{n}:{h}",
        "transactions": [],
        "logs": [],
    }


def reorg(ancestor: int, hashes: list[str]) -> dict[str, Any]:
    return {
        "chain_id": 1,
        "common_ancestor_number": ancestor,
        "common_ancestor_hash": "0xa",
        "depth": len(hashes),
        "orphaned_numbers": [ancestor + 1 + i for i in range(len(hashes))],
        "orphaned_hashes": hashes,
        "replacement_hashes": [],
        "detected_at_ms": 0,
        "idempotency_key": "k",
    }


def test_reorg_splits_runs_and_redelivered_heights_keep_the_last() -> None:
    r = reorg(4, ["0x5a"])
    ops = plan(
        [
            (BLOCK, blk(4, "0x4")),
            (BLOCK, blk(5, "0x5a")),
            (BLOCK, blk(5, "0x5a")),
            (REORG, r),
            (BLOCK, blk(5, "0x5b")),
            (BLOCK, blk(6, "0x6")),
        ]
    )
    assert ops == [
        WriteRun(((BLOCK, blk(4, "0x4")), (BLOCK, blk(5, "0x5a")))),
        ApplyReorg(r),
        WriteRun(((BLOCK, blk(5, "0x5b")), (BLOCK, blk(6, "0x6")))),
    ]


def test_block_rows_count_transactions_and_logs() -> None:
    b = blk(7, "0x7")
    b["transactions"] = [
        {
            "transaction_index": 0,
            "transaction_hash": "0xt",
            "nonce": "1",
            "from_address": "0xf",
            "to_address": None,
            "value": "5",
            "input": "0x",
            "gas_limit": "1",
            "gas_price": None,
            "max_fee_per_gas": None,
            "max_priority_fee_per_gas": None,
            "gas_used": None,
            "effective_gas_price": None,
            "success": True,
            "transaction_type": 2,
            "contract_address": None,
            "block_number": 7,
        }
    ]
    block_row, tx_rows, log_rows = block_rows(b)
    assert block_row[:4] == (1, 7, "0x7", "0x0") and block_row[10:12] == (1, 0)
    assert tx_rows[0][:5] == (1, 7, 0, "0xt", "0x7") and log_rows == []


@pytest.mark.parametrize(
    ("name", "datum", "message"),
    [
        ("trace.chain.Log", blk(1, "0x1"), "unexpected record type trace.chain.Log"),
        (BLOCK, blk(1, "0x1", chain=2), "event for chain 2 on chain 1's topic"),
        (BLOCK, {**blk(3, "0x3"), "logs": [{"block_number": 4}]}, "block 3 carries a log of block 4"),
        (REORG, {**reorg(1, ["0x2"]), "orphaned_numbers": []}, "different number of orphaned"),
    ],
)
def test_invalid_events_are_named(name: str, datum: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidEvent, match=message):
        check_event(1, name, datum)
