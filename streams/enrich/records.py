"""Pure: enriched events -> the typed Avro records of the enrichment topics, and the ``BlockEnd``
closing each block's records on each topic."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from streams.enrich.model import STAKE_CHANGE, ChainEvent
from tracekit.names import BLOCK_END, TRANSFER
from tracekit.names import STAKE_CHANGE as STAKE_CHANGE_RECORD

Outgoing = tuple[str, str, dict[str, Any]]  # (topic, record full name, datum)


def typed_record(event: ChainEvent) -> tuple[str, dict[str, Any]]:
    """(schema name, record) of one enriched event."""
    common = {
        "chain_id": event.chain_id,
        "block_number": event.block_number,
        "block_hash": event.block_hash,
        "timestamp": event.timestamp,
        "log_index": event.log_index,
        "transaction_hash": event.transaction_hash,
        "amount": str(event.amount),
        "action": event.action,
        "idempotency_key": event.key,
    }
    if event.event_type == STAKE_CHANGE:
        return STAKE_CHANGE_RECORD, {
            **common,
            "staking_contract": event.token,
            "delegator": event.from_address,
            "validator": event.to_address,
            "delegator_labels": sorted(event.from_labels),
            "validator_labels": sorted(event.to_labels),
        }
    return TRANSFER, {
        **common,
        "token": event.token,
        "from_address": event.from_address,
        "to_address": event.to_address,
        "decimals": event.decimals,
        "usd_value": None if event.usd_value is None else format(event.usd_value, "f"),
        "from_labels": sorted(event.from_labels),
        "to_labels": sorted(event.to_labels),
    }


def block_end_record(block: dict[str, Any], record_count: int) -> dict[str, Any]:
    """The ``BlockEnd`` closing ``block``'s ``record_count`` records on one enrichment topic."""
    chain_id, number, block_hash = block["chain_id"], block["block_number"], block["block_hash"]
    return {
        "chain_id": chain_id,
        "block_number": number,
        "block_hash": block_hash,
        "parent_hash": block["parent_hash"],
        "timestamp": block["timestamp"],
        "record_count": record_count,
        "idempotency_key": f"{chain_id}:block_end:{number}:{block_hash}",
    }


def block_records(
    block: dict[str, Any], events: Iterable[ChainEvent], *, transfers: str, stake_changes: str
) -> list[Outgoing]:
    """What one block puts on the enrichment topics, in order: each event's record on its topic,
    then on each topic the block's ``BlockEnd`` (also when it has no records there)."""
    out: list[Outgoing] = []
    counts = {transfers: 0, stake_changes: 0}
    for event in events:
        schema, record = typed_record(event)
        topic = transfers if schema == TRANSFER else stake_changes
        counts[topic] += 1
        out.append((topic, schema, record))
    out.extend((topic, BLOCK_END, block_end_record(block, count)) for topic, count in counts.items())
    return out
