"""Pure transforms: JSON-RPC replies -> Arrow tables in the engines' columns and types
(:mod:`operators.cryo_ingest.columns`: cryo 0.3.2's, ``blocks`` with ``parent_hash`` and
``n_transactions``).

Input is what ``eth_getBlockByNumber`` (full transactions or hashes), ``eth_getBlockReceipts`` and
``eth_getLogs`` return, already parsed from JSON. A column is one pass over the rows to pick the
field and convert it (one ``int(v, 16)`` or ``bytes.fromhex`` per value, prefixes checked for
the whole column at once), then one Arrow array per column. Conversion errors are located row by
row only once one occurred, and raise :class:`~tracekit.errors.BadRpcData` naming the block, the
row and the field, so a bad reply never becomes a bad file.
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


def quantities(
    rows: Sequence[Row], key: str, arrow_type: pa.DataType, where: Where, *, nullable: bool = False
) -> pa.Array:
    """The JSON-RPC quantity ``row[key]`` of every row as integers of ``arrow_type``."""
    try:
        raw: list[Any] = [r.get(key) for r in rows] if nullable else [r[key] for r in rows]
        present: list[Any] = [v for v in raw if v is not None] if nullable else raw
        values = [None if v is None else int(v, 16) for v in raw] if nullable else [int(v, 16) for v in raw]
        if "|".join(present).count("0x") != len(present):  # int(v, 16) alone also takes "1a"
            raise ValueError("missing 0x prefix")
        return pa.array(values, type=arrow_type)
    except _CONVERSION_ERRORS as exc:
        raise _locate(rows, key, _quantity, nullable, where, arrow_type) from exc


def decode_hex(values: list[Any]) -> pa.Array:
    """``"0x..."`` strings (or None) -> a ``large_binary`` array; raises on any malformed value.

    One ``bytes.fromhex`` per value (measured: as fast as decoding a whole column at once through
    Arrow, which pays for building a string array first). The rest is checked for all values at
    once: a body holding an ``x`` fails ``fromhex``, so ``n`` occurrences of ``0x`` in ``n`` values
    means each starts with one; and whitespace, which ``fromhex`` skips, shrinks the decoded total.
    """
    present: list[Any] = [v for v in values if v is not None]
    decoded = [None if v is None else bytes.fromhex(v[2:]) for v in values]
    joined = "|".join(present)
    if joined.count("0x") != len(present):
        raise ValueError("missing 0x prefix")
    array = pa.array(decoded, type=pa.large_binary())
    hex_digits = len(joined) - max(0, len(present) - 1) - 2 * len(present)
    if 2 * (pc.sum(pc.binary_length(array)).as_py() or 0) != hex_digits:
        raise ValueError("whitespace in hex data")  # fromhex skips it
    return array


def _check_width(array: pa.Array, nbytes: int, key: str, where: Where) -> pa.Array:
    """Hashes and addresses must have their exact width (a short one is not a hash)."""
    lengths = pc.binary_length(array)
    if array.null_count == len(array) or pc.all(pc.equal(lengths, nbytes)).as_py() is not False:
        return array
    for i, n in enumerate(lengths.to_pylist()):
        if n is not None and n != nbytes:
            raise BadRpcData(f"{where(i)}: field {key!r} should be {nbytes} bytes, got {n}")
    raise AssertionError("unreachable")  # pragma: no cover


def hex_data(
    rows: Sequence[Row], key: str, where: Where, *, nullable: bool = False, width: int | None = None
) -> pa.Array:
    """The JSON-RPC data ``row[key]`` of every row as ``large_binary``, ``width`` bytes each if given."""
    try:
        values = [r.get(key) for r in rows] if nullable else [r[key] for r in rows]
        array = decode_hex(values)
        if array.null_count and not nullable:
            raise ValueError("null")
    except _CONVERSION_ERRORS as exc:
        raise _locate(rows, key, _bytes, nullable, where, pa.large_binary()) from exc
    return array if width is None else _check_width(array, width, key, where)


def _fixed(rows: Sequence[Row], key: str, nbytes: int, where: Where, *, nullable: bool = False) -> pa.Array:
    return hex_data(rows, key, where, nullable=nullable, width=nbytes)


def _chain(chain_id: int, n: int) -> pa.Array:
    return pa.array([chain_id] * n, type=pa.uint64())


def _table(schema: pa.Schema, arrays: Sequence[pa.Array]) -> pa.Table:
    return pa.Table.from_arrays(list(arrays), schema=schema)


# -- blocks --------------------------------------------------------------------------------------


def blocks_table(chain_id: int, blocks: Sequence[Row]) -> pa.Table:
    """``blocks`` rows from ``eth_getBlockByNumber`` replies (with or without full transactions);
    ``n_transactions`` is the length of the block's ``transactions`` list."""

    def where(i: int) -> str:
        number = blocks[i].get("number") if isinstance(blocks[i], Mapping) else None
        return f"block {_index(number, f'#{i} of the batch')}"

    return _table(BLOCKS, [
        _fixed(blocks, "hash", HASH_BYTES, where),
        _fixed(blocks, "parentHash", HASH_BYTES, where),
        _fixed(blocks, "miner", ADDRESS_BYTES, where),
        quantities(blocks, "number", pa.uint32(), where),
        quantities(blocks, "gasUsed", pa.uint64(), where),
        hex_data(blocks, "extraData", where),
        quantities(blocks, "timestamp", pa.uint32(), where),
        quantities(blocks, "baseFeePerGas", pa.uint64(), where, nullable=True),
        _chain(chain_id, len(blocks)),
        column(blocks, "transactions", _length, pa.uint32(), where),
    ])


# -- transactions --------------------------------------------------------------------------------


def _length(value: Any) -> int:
    """The number of a block's transactions (full objects or hashes)."""
    if not isinstance(value, list):
        raise TypeError("should be a list of transactions or their hashes")
    return len(value)


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
        number = quantities([block], "number", pa.uint32(), lambda _: "block")[0].as_py()
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

    try:  # uint256: Python ints, then cryo's three representations
        amounts = [int(t["value"], 16) for t in txs]
        value_binary = b"".join([v.to_bytes(32, "big") for v in amounts])
    except _CONVERSION_ERRORS as exc:
        raise _locate(txs, "value", lambda v: _quantity(v).to_bytes(32, "big"), False, where,
                      pa.large_binary()) from exc
    offsets = pa.array(range(0, 32 * len(amounts) + 1, 32), type=pa.int64())
    values = pa.Array.from_buffers(pa.large_binary(), len(amounts),
                                   [None, offsets.buffers()[1], pa.py_buffer(value_binary)])
    inputs = hex_data(txs, "input", where)
    n_bytes = pc.cast(pc.binary_length(inputs), pa.uint32())
    zero_bytes = pc.cast(pc.count_substring(inputs, pattern=b"\x00"), pa.uint32())
    return _table(TRANSACTIONS, [
        pa.array(numbers, type=pa.uint32()),
        quantities(txs, "transactionIndex", pa.uint64(), where),
        _fixed(txs, "hash", HASH_BYTES, where),
        quantities(txs, "nonce", pa.uint64(), where),
        _fixed(txs, "from", ADDRESS_BYTES, where),
        _fixed(txs, "to", ADDRESS_BYTES, where, nullable=True),
        values,
        pa.array([str(v) for v in amounts], type=pa.large_string()),
        pa.array([float(v) for v in amounts], type=pa.float64()),
        inputs,
        quantities(txs, "gas", pa.uint64(), where),
        quantities(rcpts, "gasUsed", pa.uint64(), where),
        quantities(txs, "gasPrice", pa.uint64(), where, nullable=True),
        quantities(txs, "type", pa.uint32(), where, nullable=True),
        quantities(txs, "maxPriorityFeePerGas", pa.uint64(), where, nullable=True),
        quantities(txs, "maxFeePerGas", pa.uint64(), where, nullable=True),
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


def _topics(topics: Any) -> list[bytes]:
    if not isinstance(topics, list) or len(topics) > 4:
        raise ValueError("topics should be a list of at most 4 hashes")
    return [_bytes(t) for t in topics]


def topic_columns(logs: Sequence[Row], where: Where) -> list[pa.Array]:
    """``topic0`` .. ``topic3``: null where a log has fewer topics."""
    try:
        lists = [r["topics"] for r in logs]
        if any(type(t) is not list or len(t) > 4 for t in lists):
            raise ValueError("topics should be a list of at most 4 hashes")
        arrays = [decode_hex([t[k] if len(t) > k else None for t in lists]) for k in range(4)]
    except _CONVERSION_ERRORS as exc:
        raise _locate(logs, "topics", _topics, False, where, pa.list_(pa.large_binary())) from exc
    return [_check_width(a, HASH_BYTES, f"topics[{k}]", where) for k, a in enumerate(arrays)]


def logs_table(chain_id: int, logs: Sequence[Row]) -> pa.Table:
    """``logs`` rows from ``eth_getLogs`` entries (or the ``logs`` of receipts)."""

    def where(i: int) -> str:
        log = logs[i] if isinstance(logs[i], Mapping) else {}
        return f"block {_index(log.get('blockNumber'), '?')} log {_index(log.get('logIndex'), '?')}"

    topics = topic_columns(logs, where)
    return _table(LOGS, [
        quantities(logs, "blockNumber", pa.uint32(), where),
        quantities(logs, "transactionIndex", pa.uint32(), where),
        quantities(logs, "logIndex", pa.uint32(), where),
        _fixed(logs, "transactionHash", HASH_BYTES, where),
        _fixed(logs, "address", ADDRESS_BYTES, where),
        *topics,
        hex_data(logs, "data", where),
        _chain(chain_id, len(logs)),
    ])
