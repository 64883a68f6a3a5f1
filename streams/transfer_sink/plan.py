"""The transfer sink's tables and records, pure (no I/O): ``trace.enrich.Transfer`` ->
hot.transfers, ``trace.enrich.StakeChange`` -> hot.stake_changes.

A table's columns are its record's fields, same names (a unit test holds them to
``schemas/avro``). Each topic is planned on its own (:mod:`streams.hot_tables.plan`): runs of
records between reorg barriers, per height the records of one block (a record's place in it is
its ``log_index``); a block's ``BlockEnd`` names the block even when it has no records, so its
height's older rows are dropped.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from streams.hot_tables.plan import HotTable, InvalidEvent, TableSet, check_record, one_row
from tracekit.names import BLOCK_END, STAKE_CHANGE, TRANSFER

TRANSFER_COLUMNS = (
    "chain_id", "block_number", "block_hash", "timestamp", "log_index", "transaction_hash", "token",
    "from_address", "to_address", "amount", "action", "decimals", "usd_value", "from_labels",
    "to_labels", "idempotency_key",
)
STAKE_CHANGE_COLUMNS = (
    "chain_id", "block_number", "block_hash", "timestamp", "log_index", "transaction_hash",
    "staking_contract", "delegator", "validator", "amount", "action", "delegator_labels",
    "validator_labels", "idempotency_key",
)

_UINT256 = re.compile(r"[0-9]{1,78}")


def _place(name: str, record: dict[str, Any]) -> int | None:
    """A record's place in its block: its log index; a block's end comes last."""
    return None if name == BLOCK_END else int(record["log_index"])


TRANSFERS = TableSet((HotTable("transfers", TRANSFER_COLUMNS),), one_row(TRANSFER, TRANSFER_COLUMNS), _place)
STAKE_CHANGES = TableSet(
    (HotTable("stake_changes", STAKE_CHANGE_COLUMNS),), one_row(STAKE_CHANGE, STAKE_CHANGE_COLUMNS), _place
)


def _check(chain_id: int, name: str, datum: dict[str, Any], record: str, topic: str) -> None:
    check_record(chain_id, name, datum, expected=(record, BLOCK_END), topic=topic)
    if name != record:
        return
    if not _UINT256.fullmatch(datum["amount"]):
        raise InvalidEvent(f"amount {datum['amount']!r} is not a uint256 decimal string")
    usd = datum.get("usd_value")
    if usd is not None:
        try:
            if not Decimal(usd).is_finite():
                raise InvalidOperation
        except InvalidOperation:
            raise InvalidEvent(f"usd_value {usd!r} is not a decimal number") from None


def check_transfer(chain_id: int, name: str, datum: dict[str, Any]) -> None:
    """Reject what hot.transfers must not take from the transfers topic, naming the reason."""
    _check(chain_id, name, datum, TRANSFER, "transfers")


def check_stake_change(chain_id: int, name: str, datum: dict[str, Any]) -> None:
    """Reject what hot.stake_changes must not take from the stake-changes topic, naming the reason."""
    _check(chain_id, name, datum, STAKE_CHANGE, "stake_changes")
