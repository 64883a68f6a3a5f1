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

import binascii
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from tracekit.datasets import conform, contract
from tracekit.errors import ConformError, TraceError

Row = Sequence[Any]

DATASETS: Final = ("blocks", "transactions", "logs", "transfers", "stake_changes")
"""The datasets the hot tables hold (``traces`` has no hot table)."""

# per dataset: each hot column the dataset is made of, in the order the queries select them, with
# its Postgres type (migrations 0001, 0008)
_HOT: Final[Mapping[str, str]] = {
    "blocks": "block_number:bigint block_hash:text parent_hash:text author:text gas_used:numeric "
              "extra_data:text timestamp:bigint base_fee_per_gas:numeric tx_count:integer chain_id:bigint",
    "transactions": "block_number:bigint transaction_index:integer transaction_hash:text nonce:numeric "
                    "from_address:text to_address:text value:numeric input:text gas_limit:numeric "
                    "gas_used:numeric gas_price:numeric transaction_type:integer "
                    "max_priority_fee_per_gas:numeric max_fee_per_gas:numeric success:boolean "
                    "chain_id:bigint",
    "logs": "block_number:bigint transaction_index:integer log_index:integer transaction_hash:text "
            "address:text topic0:text topic1:text topic2:text topic3:text data:text chain_id:bigint",
    "transfers": "block_number:bigint block_hash:text timestamp:bigint log_index:integer "
                 "transaction_hash:text token:text from_address:text to_address:text amount:numeric "
                 "action:text decimals:integer usd_value:numeric chain_id:bigint",
    "stake_changes": "block_number:bigint block_hash:text timestamp:bigint log_index:integer "
                     "transaction_hash:text staking_contract:text delegator:text validator:text "
                     "amount:numeric action:text chain_id:bigint",
}
HOT_COLUMNS: Final[Mapping[str, tuple[str, ...]]] = {
    dataset: tuple(item.partition(":")[0] for item in text.split()) for dataset, text in _HOT.items()}
"""The hot columns each dataset is made of, in the order the queries select them."""
HOT_TYPES: Final[Mapping[str, Mapping[str, str]]] = {
    dataset: dict(item.split(":") for item in text.split()) for dataset, text in _HOT.items()}
"""The Postgres type of each hot column of :data:`HOT_COLUMNS`."""
_ARROW_OF: Final[Mapping[str, pa.DataType]] = {
    "bigint": pa.int64(), "integer": pa.int32(), "text": pa.string(), "numeric": pa.string(),
    "boolean": pa.bool_()}


def hot_schema(columns: Mapping[str, str]) -> pa.Schema:
    """How hot columns (name -> Postgres type) are read into Arrow: ``numeric`` as its decimal text
    (a uint256 fits no Arrow integer), the others as themselves."""
    return pa.schema([pa.field(name, _ARROW_OF[kind]) for name, kind in columns.items()])


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


# ------------------------------------------------------------------ vectorised: hot rows as Arrow
#
# The same conversions over whole Arrow columns (the hot rows as the aggregator reads them, COPY
# -> CSV -> Arrow, ``numeric`` as its decimal text), for the values the hot tables normally hold:
# 0x-prefixed hex, canonical integers. A column the vectorised code cannot vouch for (another
# spelling, a value that does not convert or fit) is left to the row-by-row conversion above,
# which gives the same table or names the value at fault.


class _Slow(Exception):
    """The vectorised conversion cannot vouch for a column."""


_U256_DIGITS: Final = 76  # decimal256(76, 0) holds such a number exactly, and it is below 2**255
_UNSIGNED: Final = rf"^[0-9]{{1,{_U256_DIGITS}}}$"
_CANONICAL_INT: Final = r"^(0|-?[1-9][0-9]*)$"  # the text str(int(Decimal(text))) gives back unchanged
_HALF: Final = pa.scalar(1, pa.int32())
_LONGEST: Final = 2**31 - 1  # a binary value's longest length (int32 offsets)


def _all(mask: pa.Array) -> bool:
    return pc.all(mask, skip_nulls=True, min_count=0).as_py() is True


def _hex_fast(chunk: pa.Array) -> pa.Array:
    """0x-prefixed hex text -> bytes: the digits of the whole chunk decoded at once."""
    if chunk.null_count == len(chunk):
        return pa.nulls(len(chunk), _BIN)
    if not pa.types.is_string(chunk.type) or not _all(pc.starts_with(chunk, "0x")):
        raise _Slow
    digits = pc.binary_slice(chunk.fill_null("0x").view(_BIN), 2, _LONGEST)  # bytes: faster than utf8 slices
    if not _all(pc.equal(pc.bit_wise_and(pc.binary_length(digits), 1), 0)):
        raise _Slow  # an odd number of digits
    offsets = pa.Array.from_buffers(pa.int32(), len(digits) + 1, [None, digits.buffers()[1]],
                                    offset=digits.offset)
    first, last = offsets[0].as_py(), offsets[-1].as_py()
    try:
        raw = binascii.a2b_hex(memoryview(digits.buffers()[2])[first:last])
    except (binascii.Error, ValueError):
        raise _Slow from None  # not hex (bytes.fromhex would skip whitespace: the rows decide)
    halves = pc.shift_right(pc.subtract(offsets, pa.scalar(first, pa.int32())), _HALF)
    valid = chunk.is_valid().buffers()[1] if chunk.null_count else None
    return pa.Array.from_buffers(_BIN, len(chunk), [valid, halves.buffers()[1], pa.py_buffer(raw)],
                                 null_count=chunk.null_count)


def _int_fast(chunk: pa.Array) -> pa.Array:
    if not (pa.types.is_integer(chunk.type) or pa.types.is_string(chunk.type)):
        raise _Slow
    return chunk.cast(_LONG)  # safe: a fraction or an overflow raises (the rows decide)


def _float_fast(chunk: pa.Array) -> pa.Array:
    if not pa.types.is_string(chunk.type):
        raise _Slow
    return chunk.cast(_F64)  # correctly rounded, as float(Decimal(text))


def _u256_fast(chunk: pa.Array) -> pa.Array:
    """A non-negative integer's text -> its 32 bytes big-endian, through decimal256 (32 bytes
    little-endian each: the whole buffer reversed holds each value big-endian, last value first)."""
    if chunk.null_count or not pa.types.is_string(chunk.type) or not _all(
            pc.match_substring_regex(chunk, _UNSIGNED)):
        raise _Slow
    numbers = chunk.cast(pa.decimal256(_U256_DIGITS, 0))
    little = memoryview(numbers.buffers()[1])[numbers.offset * 32:(numbers.offset + len(numbers)) * 32]
    backwards = pa.Array.from_buffers(pa.binary(32), len(numbers), [None, pa.py_buffer(bytes(little)[::-1])])
    return backwards[::-1].cast(_BIN)


def _decimal_string_fast(chunk: pa.Array) -> pa.Array:
    if not pa.types.is_string(chunk.type) or not _all(pc.match_substring_regex(chunk, _CANONICAL_INT)):
        raise _Slow
    return chunk


_FAST: Final[Mapping[Convert, Callable[[pa.Array], pa.Array]]] = {
    _hex: _hex_fast, _int: _int_fast, _float: _float_fast, _u256_bytes: _u256_fast,
    _decimal_string: _decimal_string_fast}


def _input_counts_fast(inputs: pa.ChunkedArray) -> dict[str, pa.ChunkedArray]:
    sizes = [pc.binary_length(c) for c in inputs.chunks]
    zeros = [pc.count_substring(c, "\x00") for c in inputs.chunks]
    nonzero = [pc.subtract(s, z) for s, z in zip(sizes, zeros, strict=True)]
    return {"n_input_bytes": pa.chunked_array(sizes, pa.int32()),
            "n_input_zero_bytes": pa.chunked_array(zeros, pa.int32()),
            "n_input_nonzero_bytes": pa.chunked_array(nonzero, pa.int32())}


def _converted(dataset: str, hot: pa.Table) -> pa.Table:
    arrays: dict[str, pa.ChunkedArray] = {}
    for name, (column, convert) in _SPECS[dataset].items():
        chunks = hot.column(column).chunks
        if convert is _same:
            arrow_type = _SAME_TYPES[name]
            arrays[name] = pa.chunked_array([c.cast(arrow_type) for c in chunks], arrow_type)
        else:
            arrays[name] = pa.chunked_array([_FAST[convert](c) for c in chunks], _TYPES[convert])
    if dataset == "transactions":
        arrays.update(_input_counts_fast(arrays["input"]))
    return conform(pa.table(arrays), contract(dataset))


def hot_rows(dataset: str, hot: pa.Table) -> list[tuple[Any, ...]]:
    """``hot`` (see :func:`hot_table`) as the tuples :func:`dataset_table` takes, ``numeric`` as
    :class:`~decimal.Decimal` (as psycopg reads it)."""
    columns = []
    for name in HOT_COLUMNS[dataset]:
        values = hot.column(name).to_pylist()
        if HOT_TYPES[dataset][name] == "numeric":
            values = [None if v is None else Decimal(v) for v in values]
        columns.append(values)
    return list(zip(*columns, strict=True))


def hot_table(dataset: str, hot: pa.Table) -> pa.Table:
    """The contract's table of ``hot``: ``dataset``'s hot rows in Arrow, the columns of
    :data:`HOT_COLUMNS` typed as :func:`hot_schema` reads them, in the contract's sort order.
    The same table as :func:`dataset_table` of the same rows, converted a column at a time; a
    column it cannot vouch for sends the whole table through :func:`dataset_table`, which also
    raises the errors (a :class:`BadHotRow`, a :class:`~tracekit.errors.ConformError`)."""
    if dataset not in _SPECS:
        raise BadHotRow(f"no hot table holds {dataset!r} (hot datasets: {', '.join(DATASETS)})")
    try:
        return _converted(dataset, hot)
    except (_Slow, ConformError, pa.ArrowException):
        return dataset_table(dataset, hot_rows(dataset, hot))
