"""The hot sink's tables and events, pure (no I/O): a block event -> rows of hot.blocks,
hot.transactions and hot.logs.

The planning is :mod:`streams.hot_tables.plan`: runs of blocks between reorg barriers, a height
once per run (the last event wins: a follower that re-emitted after a restart sends the same block
again). Applying the operations in order, any number of times, leaves the hot tables equal to the
chain the events describe.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from streams.hot_tables.plan import HotTable, InvalidEvent, Op, TableSet, check_record
from streams.hot_tables.plan import plan as plan_runs
from tracekit.names import BLOCK

BLOCK_COLUMNS = (
    "chain_id", "block_number", "block_hash", "parent_hash", "timestamp", "author", "gas_used",
    "gas_limit", "base_fee_per_gas", "extra_data", "tx_count", "log_count", "observed_at",
)
TRANSACTION_COLUMNS = (
    "chain_id", "block_number", "transaction_index", "transaction_hash", "block_hash", "nonce",
    "from_address", "to_address", "value", "input", "gas_limit", "gas_price", "max_fee_per_gas",
    "max_priority_fee_per_gas", "gas_used", "effective_gas_price", "success", "transaction_type",
    "contract_address",
)
LOG_COLUMNS = (
    "chain_id", "block_number", "log_index", "transaction_index", "transaction_hash", "block_hash",
    "address", "topic0", "topic1", "topic2", "topic3", "data",
)


def check_event(chain_id: int, name: str, datum: dict[str, Any]) -> None:
    """Reject events this sink must not apply, naming the reason."""
    check_record(chain_id, name, datum, expected=(BLOCK,), topic="blocks")
    if name == BLOCK:
        number = datum["block_number"]
        for tx in datum["transactions"]:
            if tx["block_number"] != number:
                raise InvalidEvent(f"block {number} carries a transaction of block {tx['block_number']}")
        for log in datum["logs"]:
            if log["block_number"] != number:
                raise InvalidEvent(f"block {number} carries a log of block {log['block_number']}")


def plan(events: Iterable[tuple[str, dict[str, Any]]]) -> list[Op]:
    """Runs of blocks between reorg barriers, one block per height and run."""
    return plan_runs(events, TABLES.item)


def block_rows(block: dict[str, Any]) -> tuple[tuple[Any, ...], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Rows for hot.blocks, hot.transactions and hot.logs, in the column orders above."""
    chain_id = block["chain_id"]
    number = block["block_number"]
    block_hash = block["block_hash"]
    txs = block["transactions"]
    logs = block["logs"]
    block_row = (
        chain_id, number, block_hash, block["parent_hash"], block["timestamp"], block["author"],
        block["gas_used"], block["gas_limit"], block["base_fee_per_gas"], block["extra_data"],
        len(txs), len(logs), _ms_to_timestamp(block["observed_at_ms"]),
    )
    tx_rows = [
        (
            chain_id, number, t["transaction_index"], t["transaction_hash"], block_hash, t["nonce"],
            t["from_address"], t["to_address"], t["value"], t["input"], t["gas_limit"], t["gas_price"],
            t["max_fee_per_gas"], t["max_priority_fee_per_gas"], t["gas_used"], t["effective_gas_price"],
            t["success"], t["transaction_type"], t["contract_address"],
        )
        for t in txs
    ]
    log_rows = [
        (
            chain_id, number, lg["log_index"], lg["transaction_index"], lg["transaction_hash"], block_hash,
            lg["address"], lg["topic0"], lg["topic1"], lg["topic2"], lg["topic3"], lg["data"],
        )
        for lg in logs
    ]
    return block_row, tx_rows, log_rows


def _rows(name: str, block: dict[str, Any]) -> tuple[list[tuple[Any, ...]], ...]:
    block_row, tx_rows, log_rows = block_rows(block)
    return [block_row], tx_rows, log_rows


def _ms_to_timestamp(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


TABLES = TableSet(
    tables=(
        HotTable("blocks", BLOCK_COLUMNS),
        HotTable("transactions", TRANSACTION_COLUMNS),
        HotTable("logs", LOG_COLUMNS),
    ),
    rows=_rows,
    item=lambda name, block: None,  # a block is one record: the last copy of a height wins
)
