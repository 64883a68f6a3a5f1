"""What the engines extract for each dataset: cryo 0.3.2's columns and Arrow types. Pure.

Discovered by running cryo 0.3.2 against anvil and reading the Parquet it writes (see
docs/backfill-operators.md). Hashes, addresses and byte strings are raw bytes (cryo's default
``binary`` encoding, not hex); a uint256 ``value`` is three columns (cryo's default
``u256_types``): 32-byte big-endian ``value_binary``, exact decimal ``value_string`` and the
nearest ``value_f64``. Every column is nullable, as in cryo's frames. ``blocks`` also has
``parent_hash`` (one of cryo's optional columns, :data:`CRYO_INCLUDE`) and ``n_transactions``
(not one of cryo's: the ``cryo`` engine adds it, :data:`ADDED`).

The files hold these tables conformed to the dataset's contract (``schemas/datasets``,
:func:`file_schema`): signed ``int32``/``int64``, ``binary``, ``string``, required columns not
null, in the contract's column order.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

import pyarrow as pa

from tracekit.datasets import contract

Dataset = Literal["blocks", "transactions", "logs", "traces"]
DATASETS: Final[tuple[Dataset, ...]] = get_args(Dataset)
# What a request without a dataset list writes; ``traces`` is opt-in (a trace_block per block).
DEFAULT_DATASETS: Final[tuple[Dataset, ...]] = ("blocks", "transactions", "logs")

_BIN = pa.large_binary()
_STR = pa.large_string()

BLOCKS: Final = pa.schema(
    [
        ("block_hash", _BIN),
        ("parent_hash", _BIN),
        ("author", _BIN),
        ("block_number", pa.uint32()),
        ("gas_used", pa.uint64()),
        ("extra_data", _BIN),
        ("timestamp", pa.uint32()),
        ("base_fee_per_gas", pa.uint64()),
        ("chain_id", pa.uint64()),
        ("n_transactions", pa.uint32()),  # ours: the length of the block's transaction list
    ]
)

TRANSACTIONS: Final = pa.schema(
    [
        ("block_number", pa.uint32()),
        ("transaction_index", pa.uint64()),
        ("transaction_hash", _BIN),
        ("nonce", pa.uint64()),
        ("from_address", _BIN),
        ("to_address", _BIN),
        ("value_binary", _BIN),
        ("value_string", _STR),
        ("value_f64", pa.float64()),
        ("input", _BIN),
        ("gas_limit", pa.uint64()),
        ("gas_used", pa.uint64()),
        ("gas_price", pa.uint64()),
        ("transaction_type", pa.uint32()),
        ("max_priority_fee_per_gas", pa.uint64()),
        ("max_fee_per_gas", pa.uint64()),
        ("success", pa.bool_()),
        ("n_input_bytes", pa.uint32()),
        ("n_input_zero_bytes", pa.uint32()),
        ("n_input_nonzero_bytes", pa.uint32()),
        ("chain_id", pa.uint64()),
    ]
)

LOGS: Final = pa.schema(
    [
        ("block_number", pa.uint32()),
        ("transaction_index", pa.uint32()),
        ("log_index", pa.uint32()),
        ("transaction_hash", _BIN),
        ("address", _BIN),
        ("topic0", _BIN),
        ("topic1", _BIN),
        ("topic2", _BIN),
        ("topic3", _BIN),
        ("data", _BIN),
        ("chain_id", pa.uint64()),
    ]
)

# One row per call trace of ``trace_block`` (parity style), as cryo's ``traces`` dataset writes it:
# the action's fields (call, create, suicide or reward), the result's (null when the node gives
# none), ``trace_address`` as ``_``-joined indices ("" for a transaction's root call), and
# ``transaction_index`` (the trace's ``transactionPosition``). Failed calls stay, with ``error``.
TRACES: Final = pa.schema(
    [
        ("action_from", _BIN),
        ("action_to", _BIN),
        ("action_value", _STR),
        ("action_gas", pa.uint32()),
        ("action_input", _BIN),
        ("action_call_type", _STR),
        ("action_init", _BIN),
        ("action_reward_type", _STR),
        ("action_type", _STR),
        ("result_gas_used", pa.uint32()),
        ("result_output", _BIN),
        ("result_code", _BIN),
        ("result_address", _BIN),
        ("trace_address", _STR),
        ("subtraces", pa.uint32()),
        ("transaction_index", pa.uint32()),
        ("transaction_hash", _BIN),
        ("block_number", pa.uint32()),
        ("block_hash", _BIN),
        ("error", _STR),
        ("chain_id", pa.uint64()),
    ]
)

SCHEMAS: Final[dict[Dataset, pa.Schema]] = {
    "blocks": BLOCKS, "transactions": TRANSACTIONS, "logs": LOGS, "traces": TRACES,
}

# Row order of each dataset's file (cryo's default sort).
SORT_KEYS: Final[dict[Dataset, tuple[str, ...]]] = {
    "blocks": ("block_number",),
    "transactions": ("block_number", "transaction_index"),
    "logs": ("block_number", "log_index"),
    "traces": ("block_number", "transaction_index"),  # stable: a transaction's traces keep their order
}


# cryo's optional columns it is asked for (``include_columns``), and the columns it cannot give,
# which the ``cryo`` engine adds itself.
CRYO_INCLUDE: Final[dict[Dataset, tuple[str, ...]]] = {"blocks": ("parent_hash",)}
ADDED: Final[dict[Dataset, tuple[str, ...]]] = {"blocks": ("n_transactions",)}


def schema_of(dataset: Dataset) -> pa.Schema:
    """What the engines extract for ``dataset``."""
    return SCHEMAS[dataset]


def file_schema(dataset: Dataset) -> pa.Schema:
    """What ``dataset``'s files hold: its contract's Arrow schema."""
    return contract(dataset).arrow_schema()
