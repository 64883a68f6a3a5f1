"""Pure transform of ``trace_block`` replies (parity-style call traces) into ``traces`` rows.

One row per trace, in the node's order, with exactly cryo 0.3.2's columns and values
(:data:`~operators.cryo_ingest.columns.TRACES`): the action's fields by its type (``call``,
``create``, ``suicide``, ``reward``), the result's by its shape (a call's ``output``, a create's
``code`` and ``address``, or none), ``trace_address`` joined with ``_``. Failed traces are kept
with their ``error`` (cryo 0.3.2 does not drop them). Names of call and reward types are cryo's
(``delegate_call``, not the node's ``delegatecall``). A malformed trace raises
:class:`~tracekit.errors.BadRpcData` naming block, transaction, trace address and field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import pyarrow as pa

from operators.cryo_ingest.columns import TRACES
from tracekit.errors import BadRpcData

Row = Mapping[str, Any]

# the node's names (ethers' serde names) -> what cryo writes
CALL_TYPES: Final = {"none": "none", "call": "call", "callcode": "call_code",
                     "delegatecall": "delegate_call", "staticcall": "static_call"}
REWARD_TYPES: Final = {"block": "reward", "uncle": "uncle", "emptyStep": "emtpy_step",  # sic, cryo's
                       "external": "external"}
ACTION_TYPES: Final = ("call", "create", "suicide", "reward")

_HASH, _ADDRESS = 32, 20


class _Bad(Exception):
    def __init__(self, field: str, value: Any, why: str) -> None:
        super().__init__(f"field {field!r} {why}: {str(value)[:80]!r}")


def _quantity(obj: Row, key: str, field: str) -> int:
    value = obj.get(key)
    if not isinstance(value, str) or not value.startswith("0x"):
        raise _Bad(field, value, "is not a 0x quantity")
    try:
        return int(value, 16)
    except ValueError as exc:
        raise _Bad(field, value, "is not a 0x quantity") from exc


def _data(obj: Row, key: str, field: str, width: int | None = None) -> bytes:
    value = obj.get(key)
    if not isinstance(value, str) or not value.startswith("0x"):
        raise _Bad(field, value, "is not 0x data")
    try:
        data = bytes.fromhex(value[2:])
    except ValueError as exc:
        raise _Bad(field, value, "is not 0x data") from exc
    if width is not None and len(data) != width:
        raise _Bad(field, value, f"should be {width} bytes, got {len(data)}")
    if 2 * len(data) != len(value) - 2:
        raise _Bad(field, value, "has whitespace in it")
    return data


def _count(obj: Row, key: str, field: str, *, nullable: bool = False) -> int | None:
    value = obj.get(key)
    if value is None and nullable:
        return None
    if isinstance(value, str) and value.startswith("0x"):  # some nodes send quantities
        return _quantity(obj, key, field)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Bad(field, value, "is not a non-negative integer")
    return value


def _named(names: Mapping[str, str], obj: Row, key: str, field: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or value not in names:
        raise _Bad(field, value, f"is not one of {', '.join(names)}")
    return names[value]


def _action(kind: str, action: Row) -> tuple[Any, ...]:
    """(from, to, value, gas, input, call_type, init, reward_type) of one action."""

    def address(key: str) -> bytes:
        return _data(action, key, f"action.{key}", _ADDRESS)

    def amount(key: str) -> str:
        return str(_quantity(action, key, f"action.{key}"))

    if kind == "call":
        return (address("from"), address("to"), amount("value"), _quantity(action, "gas", "action.gas"),
                _data(action, "input", "action.input"),
                _named(CALL_TYPES, action, "callType", "action.callType"), None, None)
    if kind == "create":
        return (address("from"), None, amount("value"), _quantity(action, "gas", "action.gas"), None, None,
                _data(action, "init", "action.init"), None)
    if kind == "suicide":
        return (address("address"), address("refundAddress"), amount("balance"), None, None, None, None, None)
    return (address("author"), None, amount("value"), None, None, None, None,
            _named(REWARD_TYPES, action, "rewardType", "action.rewardType"))


def _result(result: Any) -> tuple[Any, ...]:
    """(gas_used, output, code, address): a call's result, a create's, or none (null)."""
    if result is None:
        return (None, None, None, None)
    if not isinstance(result, Mapping):
        raise _Bad("result", result, "is not a JSON object")
    if "output" in result:  # a call's
        return (_quantity(result, "gasUsed", "result.gasUsed"), _data(result, "output", "result.output"),
                None, None)
    if "code" in result and "address" in result:  # a create's
        return (_quantity(result, "gasUsed", "result.gasUsed"), None, _data(result, "code", "result.code"),
                _data(result, "address", "result.address", _ADDRESS))
    raise _Bad("result", result, "is neither a call's nor a create's result")


def _trace_address(trace: Row) -> str:
    path = trace.get("traceAddress")
    if not isinstance(path, list) or any(type(n) is not int or n < 0 for n in path):
        raise _Bad("traceAddress", path, "is not a list of indices")
    return "_".join(map(str, path))


def trace_row(chain_id: int, trace: Row) -> tuple[Any, ...]:
    """The ``traces`` row of one trace, in :data:`TRACES` column order."""
    kind = trace.get("type")
    if kind not in ACTION_TYPES:
        raise _Bad("type", kind, f"is not one of {', '.join(ACTION_TYPES)}")
    action = trace.get("action")
    if not isinstance(action, Mapping):
        raise _Bad("action", action, "is not a JSON object")
    error = trace.get("error")
    if error is not None and not isinstance(error, str):
        raise _Bad("error", error, "is not a string")
    tx_hash = None if trace.get("transactionHash") is None else _data(trace, "transactionHash",
                                                                      "transactionHash", _HASH)
    return (*_action(kind, action), kind, *_result(trace.get("result")), _trace_address(trace),
            _count(trace, "subtraces", "subtraces"),
            _count(trace, "transactionPosition", "transactionPosition", nullable=True), tx_hash,
            _count(trace, "blockNumber", "blockNumber"), _data(trace, "blockHash", "blockHash", _HASH),
            error, chain_id)


def _where(trace: Any, i: int) -> str:
    if not isinstance(trace, Mapping):
        return f"trace #{i} of the batch"
    path = trace.get("traceAddress")
    where = f"block {trace.get('blockNumber')} transaction {trace.get('transactionPosition')}"
    return f"{where} trace [{','.join(map(str, path)) if isinstance(path, list) else path}]"


def traces_table(chain_id: int, traces: Sequence[Row]) -> pa.Table:
    """``traces`` rows from ``trace_block`` replies (flattened, in the node's order)."""
    rows: list[tuple[Any, ...]] = []
    for i, trace in enumerate(traces):
        try:
            if not isinstance(trace, Mapping):
                raise _Bad("trace", trace, "is not a JSON object")
            rows.append(trace_row(chain_id, trace))
        except _Bad as exc:
            raise BadRpcData(f"{_where(trace, i)}: {exc}") from exc
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in TRACES.names]
    arrays = []
    for values, field in zip(columns, TRACES, strict=True):
        try:
            arrays.append(pa.array(list(values), type=field.type))
        except (pa.ArrowInvalid, OverflowError) as exc:  # a gas or count beyond cryo's uint32
            i = next(i for i, v in enumerate(values) if isinstance(v, int) and v >= 2 ** field.type.bit_width)
            raise BadRpcData(f"{_where(traces[i], i)}: {field.name} {values[i]} does not fit cryo's "
                             f"{field.type}") from exc
    return pa.Table.from_arrays(arrays, schema=TRACES)
