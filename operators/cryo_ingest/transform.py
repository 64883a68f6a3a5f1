"""Pure transforms: JSON-RPC replies -> Arrow tables with exactly cryo 0.3.2's columns and types.

Input is what ``eth_getBlockByNumber`` (full transactions or hashes), ``eth_getBlockReceipts`` and
``eth_getLogs`` return, already parsed from JSON. Each column is built in one pass over the rows
and handed to Arrow at once; conversion errors are only located (row by row) when one occurred.
Anything malformed raises :class:`~tracekit.errors.BadRpcData` naming the block, the row and the
field, so a bad reply never becomes a bad file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from operators.cryo_ingest.columns import BLOCKS, LOGS, TRANSACTIONS
from tracekit.errors import BadRpcData

Row = Mapping[str, Any]
Where = Callable[[int], str]  # row index -> "block 12 transaction 3", only called on error

HASH_BYTES = 32
ADDRESS_BYTES = 20
_CONVERSION_ERRORS = (KeyError, TypeError, ValueError, AttributeError, OverflowError, pa.ArrowException)


def _quantity(value: Any) -> int:
    """A JSON-RPC quantity ``"0x1a"``; raises on anything else."""
    if not value.startswith("0x"):
        raise ValueError("missing 0x prefix")
    return int(value, 16)


def _bytes(value: Any) -> bytes:
    """A JSON-RPC data string ``"0xab12"``; raises on anything else."""
    if not value.startswith("0x"):
        raise ValueError("missing 0x prefix")
    return bytes.fromhex(value[2:])


def _index(value: Any, fallback: str) -> str:
    """A JSON-RPC quantity as a decimal for messages, else ``fallback``."""
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return str(int(value, 16))
        except ValueError:
            pass
    return fallback


def _locate(rows: Sequence[Row], key: str, conv: Callable[[Any], Any], nullable: bool,
            where: Where, arrow_type: pa.DataType) -> BadRpcData:
    """The error naming the first row whose ``key`` does not convert (slow path, errors only)."""
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            return BadRpcData(f"{where(i)}: expected a JSON object, got {type(row).__name__}")
        value = row.get(key)
        if value is None:
            if nullable:
                continue
            return BadRpcData(f"{where(i)}: field {key!r} is missing")
        try:
            pa.array([conv(value)], type=arrow_type)
        except _CONVERSION_ERRORS as exc:
            return BadRpcData(f"{where(i)}: field {key!r} is malformed ({exc}): {str(value)[:80]!r}")
    return BadRpcData(f"{where(0) if rows else 'reply'}: field {key!r} could not be converted")


def column(
    rows: Sequence[Row],
    key: str,
    conv: Callable[[Any], Any],
    arrow_type: pa.DataType,
    where: Where,
    *,
    nullable: bool = False,
) -> pa.Array:
    """``conv(row[key])`` for every row as one Arrow array of ``arrow_type``."""
    try:
        if nullable:
            values = [None if (v := r.get(key)) is None else conv(v) for r in rows]
        else:
            values = [conv(r[key]) for r in rows]
        return pa.array(values, type=arrow_type)
    except _CONVERSION_ERRORS as exc:
        raise _locate(rows, key, conv, nullable, where, arrow_type) from exc


def _check_width(array: pa.Array, nbytes: int, key: str, where: Where) -> pa.Array:
    """Hashes and addresses must have their exact width (a short one is not a hash)."""
    lengths = pc.binary_length(array)
    if array.null_count == len(array) or pc.all(pc.equal(lengths, nbytes)).as_py() is not False:
        return array
    for i, n in enumerate(lengths.to_pylist()):
        if n is not None and n != nbytes:
            raise BadRpcData(f"{where(i)}: field {key!r} should be {nbytes} bytes, got {n}")
    raise AssertionError("unreachable")  # pragma: no cover


def _fixed(rows: Sequence[Row], key: str, nbytes: int, where: Where, *, nullable: bool = False) -> pa.Array:
    return _check_width(column(rows, key, _bytes, pa.large_binary(), where, nullable=nullable), nbytes,
                        key, where)


def _chain(chain_id: int, n: int) -> pa.Array:
    return pa.array([chain_id] * n, type=pa.uint64())


def _table(schema: pa.Schema, arrays: Sequence[pa.Array]) -> pa.Table:
    return pa.Table.from_arrays(list(arrays), schema=schema)


# -- blocks --------------------------------------------------------------------------------------


def blocks_table(chain_id: int, blocks: Sequence[Row]) -> pa.Table:
    """``blocks`` rows from ``eth_getBlockByNumber`` replies (with or without full transactions)."""

    def where(i: int) -> str:
        number = blocks[i].get("number") if isinstance(blocks[i], Mapping) else None
        return f"block {_index(number, f'#{i} of the batch')}"

    return _table(BLOCKS, [
        _fixed(blocks, "hash", HASH_BYTES, where),
        _fixed(blocks, "miner", ADDRESS_BYTES, where),
        column(blocks, "number", _quantity, pa.uint32(), where),
        column(blocks, "gasUsed", _quantity, pa.uint64(), where),
        column(blocks, "extraData", _bytes, pa.large_binary(), where),
        column(blocks, "timestamp", _quantity, pa.uint32(), where),
        column(blocks, "baseFeePerGas", _quantity, pa.uint64(), where, nullable=True),
        _chain(chain_id, len(blocks)),
    ])


# -- transactions --------------------------------------------------------------------------------


def _status(value: Any) -> bool:
    code = _quantity(value)
    if code not in (0, 1):
        raise ValueError(f"status must be 0x0 or 0x1, got {value}")
    return code == 1


def flatten_transactions(
    blocks: Sequence[Row], receipts: Sequence[Sequence[Row]]
) -> tuple[list[Row], list[Row], list[int]]:
    """(transactions, their receipts, their block numbers) of full blocks, checked pairwise."""
    txs: list[Row] = []
    rcpts: list[Row] = []
    numbers: list[int] = []
    for block, block_receipts in zip(blocks, receipts, strict=True):
        number = column([block], "number", _quantity, pa.uint32(), lambda _: "block")[0].as_py()
        block_txs = block.get("transactions")
        if not isinstance(block_txs, list) or any(not isinstance(t, Mapping) for t in block_txs):
            raise BadRpcData(f"block {number}: field 'transactions' should be a list of full transactions")
        if not isinstance(block_receipts, list) or len(block_receipts) != len(block_txs):
            got = len(block_receipts) if isinstance(block_receipts, list) else type(block_receipts).__name__
            raise BadRpcData(f"block {number}: field 'receipts': expected {len(block_txs)}, got {got}")
        for i, (tx, receipt) in enumerate(zip(block_txs, block_receipts, strict=True)):
            if not isinstance(receipt, Mapping) or receipt.get("transactionHash") != tx.get("hash"):
                raise BadRpcData(
                    f"block {number} transaction {i}: field 'transactionHash' of its receipt does not "
                    f"match the transaction {tx.get('hash')!r}"
                )
        txs.extend(block_txs)
        rcpts.extend(block_receipts)
        numbers.extend([number] * len(block_txs))
    return txs, rcpts, numbers


def transactions_table(chain_id: int, blocks: Sequence[Row], receipts: Sequence[Sequence[Row]]) -> pa.Table:
    """``transactions`` rows from full blocks and their ``eth_getBlockReceipts`` lists (same order)."""
    txs, rcpts, numbers = flatten_transactions(blocks, receipts)

    def where(i: int) -> str:
        index = _index(txs[i].get("transactionIndex"), "?")
        return f"block {numbers[i]} transaction {index} ({txs[i].get('hash')})"

    try:
        amounts = [_quantity(t["value"]) for t in txs]
        value_binary = [v.to_bytes(32, "big") for v in amounts]
    except _CONVERSION_ERRORS as exc:
        raise _locate(txs, "value", lambda v: _quantity(v).to_bytes(32, "big"), False, where,
                      pa.large_binary()) from exc
    inputs = column(txs, "input", _bytes, pa.large_binary(), where)
    n_bytes = pc.cast(pc.binary_length(inputs), pa.uint32())
    zero_bytes = pa.array([b.count(0) for b in inputs.to_pylist()], type=pa.uint32())
    return _table(TRANSACTIONS, [
        pa.array(numbers, type=pa.uint32()),
        column(txs, "transactionIndex", _quantity, pa.uint64(), where),
        _fixed(txs, "hash", HASH_BYTES, where),
        column(txs, "nonce", _quantity, pa.uint64(), where),
        _fixed(txs, "from", ADDRESS_BYTES, where),
        _fixed(txs, "to", ADDRESS_BYTES, where, nullable=True),
        pa.array(value_binary, type=pa.large_binary()),
        pa.array([str(v) for v in amounts], type=pa.large_string()),
        pa.array([float(v) for v in amounts], type=pa.float64()),
        inputs,
        column(txs, "gas", _quantity, pa.uint64(), where),
        column(rcpts, "gasUsed", _quantity, pa.uint64(), where),
        column(txs, "gasPrice", _quantity, pa.uint64(), where, nullable=True),
        column(txs, "type", _quantity, pa.uint32(), where, nullable=True),
        column(txs, "maxPriorityFeePerGas", _quantity, pa.uint64(), where, nullable=True),
        column(txs, "maxFeePerGas", _quantity, pa.uint64(), where, nullable=True),
        column(rcpts, "status", _status, pa.bool_(), where, nullable=True),
        n_bytes,
        zero_bytes,
        pc.subtract(n_bytes, zero_bytes),
        _chain(chain_id, len(txs)),
    ])


# -- logs ----------------------------------------------------------------------------------------


def logs_of_receipts(receipts: Sequence[Sequence[Row]]) -> list[Row]:
    """The logs of every receipt, in block and log-index order."""
    out: list[Row] = []
    for block_receipts in receipts:
        for receipt in block_receipts:
            logs = receipt.get("logs")
            if not isinstance(logs, list):
                tx = receipt.get("transactionHash")
                raise BadRpcData(f"transaction {tx!r}: field 'logs' of its receipt should be a list")
            out.extend(logs)
    return out


def _topic(k: int) -> Callable[[Any], Any]:
    def get(topics: Any) -> Any:
        if not isinstance(topics, list) or len(topics) > 4:
            raise ValueError("topics should be a list of at most 4 hashes")
        return _bytes(topics[k]) if k < len(topics) else None

    return get


def logs_table(chain_id: int, logs: Sequence[Row]) -> pa.Table:
    """``logs`` rows from ``eth_getLogs`` entries (or the ``logs`` of receipts)."""

    def where(i: int) -> str:
        log = logs[i] if isinstance(logs[i], Mapping) else {}
        return f"block {_index(log.get('blockNumber'), '?')} log {_index(log.get('logIndex'), '?')}"

    topics = []
    for k in range(4):
        array = column(logs, "topics", _topic(k), pa.large_binary(), where)
        topics.append(_check_width(array, HASH_BYTES, f"topics[{k}]", where))
    return _table(LOGS, [
        column(logs, "blockNumber", _quantity, pa.uint32(), where),
        column(logs, "transactionIndex", _quantity, pa.uint32(), where),
        column(logs, "logIndex", _quantity, pa.uint32(), where),
        _fixed(logs, "transactionHash", HASH_BYTES, where),
        _fixed(logs, "address", ADDRESS_BYTES, where),
        *topics,
        column(logs, "data", _bytes, pa.large_binary(), where),
        _chain(chain_id, len(logs)),
    ])
