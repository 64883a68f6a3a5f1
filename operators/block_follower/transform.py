"""Pure transforms: JSON-RPC block + receipts -> the Avro ``Block`` and ``Reorg`` event records.

Column names follow cryo's datasets. Hashes, addresses and byte strings stay lower-case hex
strings; uint256 quantities become exact decimal strings. Anything malformed raises
:class:`BadRpcData` naming the block and field, so one bad reply never becomes a bad row.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from operators.block_follower.reorg import BlockRef, Reorg
from tracekit.errors import BadRpcData
from tracekit.jsonrpc import hex_to_int


def _q(obj: dict[str, Any], key: str, where: str) -> int:
    return hex_to_int(obj.get(key), f"{where}: field {key!r}")


def _dec(obj: dict[str, Any], key: str, where: str) -> str:
    return str(_q(obj, key, where))


def _opt_dec(obj: dict[str, Any], key: str, where: str) -> str | None:
    return None if obj.get(key) is None else _dec(obj, key, where)


def _hex(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.startswith("0x"):
        raise BadRpcData(f"{where}: field {key!r} should be a hex string, got {value!r}")
    return value.lower()


def _opt_hex(obj: dict[str, Any], key: str, where: str) -> str | None:
    return None if obj.get(key) is None else _hex(obj, key, where)


@dataclass(frozen=True, slots=True)
class FetchedBlock:
    """A block as fetched, with its reorg-relevant reference and its event record."""

    ref: BlockRef
    record: dict[str, Any]


def block_key(chain_id: int, number: int, block_hash: str) -> str:
    """Deterministic idempotency key of a block event."""
    return f"{chain_id}:block:{number}:{block_hash}"


def reorg_key(chain_id: int, reorg: Reorg) -> str:
    """Deterministic idempotency key of a reorg event (same reorg seen twice -> same key)."""
    digest = hashlib.sha256(",".join(r.hash for r in reorg.orphaned).encode()).hexdigest()[:16]
    return f"{chain_id}:reorg:{reorg.ancestor.number}:{reorg.ancestor.hash}:{digest}"


def block_record(
    chain_id: int, block: Any, receipts: Any, observed_at_ms: int
) -> FetchedBlock:
    """Build the ``Block`` event from ``eth_getBlockByNumber(n, true)`` and ``eth_getBlockReceipts``."""
    if not isinstance(block, dict):
        raise BadRpcData(f"block reply is not an object: {type(block).__name__}")
    number = _q(block, "number", "block")
    where = f"block {number}"
    block_hash = _hex(block, "hash", where)
    parent_hash = _hex(block, "parentHash", where)
    txs = block.get("transactions")
    if not isinstance(txs, list):
        raise BadRpcData(f"{where}: field 'transactions' should be a list of full transactions")
    if not isinstance(receipts, list) or len(receipts) != len(txs):
        got = len(receipts) if isinstance(receipts, list) else type(receipts).__name__
        raise BadRpcData(f"{where}: expected {len(txs)} receipts, got {got}")

    transactions = []
    logs = []
    for index, (tx, receipt) in enumerate(zip(txs, receipts, strict=True)):
        if not isinstance(tx, dict) or not isinstance(receipt, dict):
            raise BadRpcData(f"{where}: transaction {index} is not an object (full transactions needed)")
        tx_where = f"{where} transaction {index}"
        tx_hash = _hex(tx, "hash", tx_where)
        if _hex(receipt, "transactionHash", tx_where) != tx_hash:
            raise BadRpcData(f"{tx_where}: receipt is for another transaction")
        status = receipt.get("status")
        transactions.append({
            "block_number": number,
            "transaction_index": index,
            "transaction_hash": tx_hash,
            "nonce": _dec(tx, "nonce", tx_where),
            "from_address": _hex(tx, "from", tx_where),
            "to_address": _opt_hex(tx, "to", tx_where),
            "value": _dec(tx, "value", tx_where),
            "input": _hex(tx, "input", tx_where),
            "gas_limit": _dec(tx, "gas", tx_where),
            "gas_price": _opt_dec(tx, "gasPrice", tx_where),
            "max_fee_per_gas": _opt_dec(tx, "maxFeePerGas", tx_where),
            "max_priority_fee_per_gas": _opt_dec(tx, "maxPriorityFeePerGas", tx_where),
            "gas_used": _opt_dec(receipt, "gasUsed", tx_where),
            "effective_gas_price": _opt_dec(receipt, "effectiveGasPrice", tx_where),
            "success": None if status is None else _q(receipt, "status", tx_where) == 1,
            "transaction_type": None if tx.get("type") is None else _q(tx, "type", tx_where),
            "contract_address": _opt_hex(receipt, "contractAddress", tx_where),
        })
        receipt_logs = receipt.get("logs")
        if not isinstance(receipt_logs, list):
            raise BadRpcData(f"{tx_where}: receipt field 'logs' should be a list")
        for log in receipt_logs:
            if not isinstance(log, dict):
                raise BadRpcData(f"{tx_where}: a log is not an object")
            log_where = f"{tx_where} log"
            topics = log.get("topics") or []
            if not isinstance(topics, list) or len(topics) > 4:
                raise BadRpcData(f"{log_where}: 'topics' should be a list of at most 4 hashes")
            topics = [str(t).lower() for t in topics] + [None] * (4 - len(topics))
            logs.append({
                "block_number": number,
                "transaction_index": index,
                "log_index": _q(log, "logIndex", log_where),
                "transaction_hash": tx_hash,
                "address": _hex(log, "address", log_where),
                "topic0": topics[0],
                "topic1": topics[1],
                "topic2": topics[2],
                "topic3": topics[3],
                "data": _hex(log, "data", log_where),
            })

    record = {
        "chain_id": chain_id,
        "block_number": number,
        "block_hash": block_hash,
        "parent_hash": parent_hash,
        "timestamp": _q(block, "timestamp", where),
        "author": _opt_hex(block, "miner", where),
        "gas_used": _dec(block, "gasUsed", where),
        "gas_limit": _dec(block, "gasLimit", where),
        "base_fee_per_gas": _opt_dec(block, "baseFeePerGas", where),
        "extra_data": _opt_hex(block, "extraData", where),
        "observed_at_ms": observed_at_ms,
        "idempotency_key": block_key(chain_id, number, block_hash),
        "transactions": transactions,
        "logs": logs,
    }
    return FetchedBlock(BlockRef(number, block_hash, parent_hash), record)


def reorg_record(chain_id: int, reorg: Reorg, detected_at_ms: int) -> dict[str, Any]:
    return {
        "chain_id": chain_id,
        "common_ancestor_number": reorg.ancestor.number,
        "common_ancestor_hash": reorg.ancestor.hash,
        "depth": reorg.depth,
        "orphaned_numbers": [r.number for r in reorg.orphaned],
        "orphaned_hashes": [r.hash for r in reorg.orphaned],
        "replacement_hashes": list(reorg.replacement_hashes),
        "detected_at_ms": detected_at_ms,
        "idempotency_key": reorg_key(chain_id, reorg),
    }
