"""Hot-table rows -> each dataset's contract, pure (no I/O).

The hot tables keep hashes, addresses and byte strings as 0x-prefixed hex text and uint256
quantities as ``numeric``; the contracts (``schemas/datasets``) want raw bytes, ``long``/``int``,
and a uint256 as an exact decimal string plus its nearest double (``transactions.value`` also as
32 bytes big-endian). :func:`dataset_table` converts a dataset's rows (tuples in the column order
of :data:`HOT_COLUMNS`, as the queries of ``hot.sql`` select them) and conforms the result to the
contract (:func:`tracekit.datasets.conform`: the contract's column order and types, required
columns not null). Columns the hot tables lack are null, which every contract allows for them
(``transactions`` derives ``n_input_*`` from ``input``; the hot tables' extra columns, such as
labels or ``effective_gas_price``, are not in the contracts and are dropped).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

import pyarrow as pa

from tracekit.datasets import conform, contract
from tracekit.errors import TraceError

Row = Sequence[Any]

DATASETS: Final = ("blocks", "transactions", "logs", "transfers", "stake_changes")
"""The datasets the hot tables hold (``traces`` has no hot table)."""

HOT_COLUMNS: Final[Mapping[str, tuple[str, ...]]] = {
    "blocks": ("block_number", "block_hash", "parent_hash", "author", "gas_used", "extra_data", "timestamp",
               "base_fee_per_gas", "tx_count", "chain_id"),
    "transactions": ("block_number", "transaction_index", "transaction_hash", "nonce", "from_address",
                     "to_address", "value", "input", "gas_limit", "gas_used", "gas_price", "transaction_type",
                     "max_priority_fee_per_gas", "max_fee_per_gas", "success", "chain_id"),
    "logs": ("block_number", "transaction_index", "log_index", "transaction_hash", "address", "topic0",
             "topic1", "topic2", "topic3", "data", "chain_id"),
    "transfers": ("block_number", "block_hash", "timestamp", "log_index", "transaction_hash", "token",
                  "from_address", "to_address", "amount", "action", "decimals", "usd_value", "chain_id"),
    "stake_changes": ("block_number", "block_hash", "timestamp", "log_index", "transaction_hash",
                      "staking_contract", "delegator", "validator", "amount", "action", "chain_id"),
}
"""The hot columns each dataset is made of, in the order the queries select them."""


class BadHotRow(TraceError):
    """A hot-table value does not convert to its dataset's contract."""


def _hex(value: Any) -> bytes | None:
    if value is None:
        return None
    text = str(value)
    return bytes.fromhex(text[2:] if text[:2] in ("0x", "0X") else text)


def _int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, Decimal) and value != value.to_integral_value():
        raise ValueError(f"{value} is not an integer")
    return int(value)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _same(value: Any) -> Any:
    return value


def _u256_bytes(value: Any) -> bytes | None:
    number = _int(value)
    return None if number is None else number.to_bytes(32, "big")


def _decimal_string(value: Any) -> str | None:
    number = _int(value)
    return None if number is None else str(number)


Convert = Callable[[Any], Any]
_BIN, _LONG, _STR, _F64, _BOOL = pa.binary(), pa.int64(), pa.string(), pa.float64(), pa.bool_()
# The Arrow type of a conversion's values, before conform casts them to the contract's type
# (``_same`` keeps the hot value: its type is the column's, in _SAME_TYPES).
_TYPES: Final[Mapping[Convert, pa.DataType]] = {_hex: _BIN, _int: _LONG, _u256_bytes: _BIN,
                                                _decimal_string: _STR, _float: _F64}
_SAME_TYPES: Final[Mapping[str, pa.DataType]] = {"success": _BOOL, "action": _STR}


def _spec(text: str) -> dict[str, tuple[str, Convert]]:
    """``"column=hot:conversion ..."`` -> the spec (``column:conversion`` when the names agree)."""
    convert: dict[str, Convert] = {"hex": _hex, "int": _int, "float": _float, "same": _same,
                                   "u256": _u256_bytes, "dec": _decimal_string}
    out = {}
    for item in text.split():
        names, _, how = item.partition(":")
        column, _, hot = names.partition("=")
        out[column] = (hot or column, convert[how])
    return out


# per dataset: contract column -> (hot column, conversion)
_SPECS: Final[Mapping[str, Mapping[str, tuple[str, Convert]]]] = {
    "blocks": _spec("block_number:int block_hash:hex parent_hash:hex author:hex gas_used:int extra_data:hex "
                    "timestamp:int base_fee_per_gas:int n_transactions=tx_count:int chain_id:int"),
    "transactions": _spec(
        "block_number:int transaction_index:int transaction_hash:hex nonce:int from_address:hex "
        "to_address:hex value_binary=value:u256 value_string=value:dec value_f64=value:float input:hex "
        "gas_limit:int gas_used:int gas_price:int transaction_type:int max_priority_fee_per_gas:int "
        "max_fee_per_gas:int success:same chain_id:int"),
    "logs": _spec("block_number:int transaction_index:int log_index:int transaction_hash:hex address:hex "
                  "topic0:hex topic1:hex topic2:hex topic3:hex data:hex chain_id:int"),
    "transfers": _spec(
        "block_number:int block_hash:hex timestamp:int log_index:int transaction_hash:hex erc20=token:hex "
        "from_address:hex to_address:hex value_string=amount:dec value_f64=amount:float action:same "
        "decimals:int usd_value:float chain_id:int"),
    "stake_changes": _spec(
        "block_number:int block_hash:hex timestamp:int log_index:int transaction_hash:hex "
        "staking_contract:hex delegator:hex validator:hex amount_string=amount:dec amount_f64=amount:float "
        "action:same chain_id:int"),
}


def _input_counts(inputs: Sequence[bytes | None]) -> dict[str, pa.Array]:
    """``n_input_bytes``, ``n_input_zero_bytes``, ``n_input_nonzero_bytes`` of the call data."""
    sizes = [None if b is None else len(b) for b in inputs]
    zeros = [None if b is None else b.count(0) for b in inputs]
    nonzero = [None if s is None or z is None else s - z for s, z in zip(sizes, zeros, strict=True)]
    return {"n_input_bytes": pa.array(sizes, _LONG), "n_input_zero_bytes": pa.array(zeros, _LONG),
            "n_input_nonzero_bytes": pa.array(nonzero, _LONG)}


def dataset_table(dataset: str, rows: Sequence[Row]) -> pa.Table:
    """``rows`` of ``dataset``'s hot table (tuples in :data:`HOT_COLUMNS` order, already in the
    contract's sort order) as the contract's table. A value that does not convert is a
    :class:`BadHotRow` naming the dataset, column and block; one that does not fit the contract a
    :class:`~tracekit.errors.ConformError`."""
    if dataset not in _SPECS:
        raise BadHotRow(f"no hot table holds {dataset!r} (hot datasets: {', '.join(DATASETS)})")
    position = {name: i for i, name in enumerate(HOT_COLUMNS[dataset])}
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(position)
    arrays: dict[str, pa.Array] = {}
    converted: dict[str, list[Any]] = {}
    for name, (hot, convert) in _SPECS[dataset].items():
        values = columns[position[hot]]
        try:
            converted[name] = [convert(v) for v in values]
        except (ValueError, TypeError, OverflowError) as exc:
            bad = next(i for i, v in enumerate(values) if not _converts(convert, v))
            block = rows[bad][position["block_number"]]
            raise BadHotRow(f"{dataset}: column {hot!r} of block {block}: {values[bad]!r} does not convert "
                            f"to {name} ({exc})") from exc
        arrow_type = _SAME_TYPES[name] if convert is _same else _TYPES[convert]
        try:
            arrays[name] = pa.array(converted[name], arrow_type)
        except (pa.ArrowInvalid, OverflowError) as exc:
            raise BadHotRow(f"{dataset}: column {hot!r} holds a value that does not fit {name} ({exc})"
                            ) from exc
    if dataset == "transactions":
        arrays.update(_input_counts(converted["input"]))
    return conform(pa.table(arrays), contract(dataset))


def _converts(convert: Convert, value: Any) -> bool:
    try:
        convert(value)
    except (ValueError, TypeError, OverflowError):
        return False
    return True
