"""The ``cryo`` engine: the PyPI ``cryo`` 0.3.2 bindings, one collect per dataset, in a thread.

Facts of this cryo version (January 2024) that shape this adapter:

- block ranges are end-EXCLUSIVE (``"start:end+1"``), and the end is always explicit (its
  ``reorg_buffer`` is not used: the caller checked the confirmed head);
- one dataset per call (a multi-dataset collect panics);
- failures surface as Rust panics (``pyo3_asyncio.RustPanic`` with the text "unknown error", the
  details printed on stderr; pyo3's ``PanicException`` derives from ``BaseException``). They are
  mapped to :class:`~operators.cryo_ingest.errors.CryoFailed`, naming the dataset and chunk;
- the Rust work runs on cryo's own tokio threads, but the call is wrapped in its own event loop
  in a worker thread (``asyncio.to_thread``) so the caller's loop is never blocked.

The collected polars frame is converted to Arrow and cast to :mod:`operators.cryo_ingest.columns`;
any other set of columns (another cryo version) raises :class:`CryoSchemaMismatch`. ``blocks`` is
collected with cryo's optional ``parent_hash`` (``include_columns``); cryo has no transaction count
of a block, so ``n_transactions`` is asked of the node, by block hash.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from operators.cryo_ingest.columns import ADDED, CRYO_INCLUDE, SCHEMAS, Dataset
from operators.cryo_ingest.engines.rpc import transaction_counts
from operators.cryo_ingest.errors import CryoFailed
from operators.cryo_ingest.ratelimit import RetryingRpc
from operators.range_splitter import Chunk
from tracekit.errors import TraceError

_NOT_OURS = (KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError)


class CryoSchemaMismatch(TraceError):
    """cryo returned other columns than operators.cryo_ingest.columns lists (another cryo version?)."""


def cryo_blocks(chunk: Chunk) -> list[str]:
    """cryo's block-range argument for ``chunk``: end-exclusive."""
    return [f"{chunk.start}:{chunk.end + 1}"]


def _check_names(table: pa.Table, dataset: Dataset) -> None:
    expected = [name for name in SCHEMAS[dataset].names if name not in ADDED.get(dataset, ())]
    if sorted(table.column_names) != sorted(expected):
        raise CryoSchemaMismatch(f"cryo returned {dataset} columns {table.column_names}, expected {expected}")


def to_columns(table: pa.Table, dataset: Dataset, added: Mapping[str, pa.Array] | None = None) -> pa.Table:
    """``table`` (cryo's frame as Arrow) with ``added`` (the columns cryo cannot give,
    :data:`~operators.cryo_ingest.columns.ADDED`) as exactly the engines' columns, order and types."""
    schema = SCHEMAS[dataset]
    _check_names(table, dataset)
    extra = dict(added or {})
    if sorted(extra) != sorted(ADDED.get(dataset, ())):
        raise ValueError(f"{dataset}: cryo's table needs the added columns {ADDED.get(dataset, ())}, "
                         f"got {sorted(extra)}")
    for name, values in extra.items():
        table = table.append_column(name, values)
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise CryoSchemaMismatch(f"cryo's {dataset} columns do not cast to {schema}: {exc}") from exc


def _collect(dataset: Dataset, kwargs: dict[str, Any]) -> Any:
    import cryo  # a heavy import: only when this engine runs

    return asyncio.run(cryo.async_collect(dataset, **kwargs))


async def collect(
    rpc_url: str,
    dataset: Dataset,
    chunk: Chunk,
    *,
    concurrency: int = 4,
    max_retries: int = 8,
    initial_backoff_ms: int = 250,
) -> pa.Table:
    """One dataset of ``chunk`` through cryo, as an Arrow table of cryo's columns and types (its
    optional columns in :data:`~operators.cryo_ingest.columns.CRYO_INCLUDE` included)."""
    kwargs: dict[str, Any] = {
        "blocks": cryo_blocks(chunk),
        **({"include_columns": list(CRYO_INCLUDE[dataset])} if dataset in CRYO_INCLUDE else {}),
        "rpc": rpc_url,
        "max_concurrent_requests": concurrency,
        "max_retries": max_retries,
        "initial_backoff": initial_backoff_ms,
        "verbose": False,
        "no_report": True,
    }
    try:
        frame = await asyncio.to_thread(_collect, dataset, kwargs)
    except _NOT_OURS:
        raise
    except BaseException as exc:  # RustPanic (Exception) or pyo3's PanicException (BaseException)
        raise CryoFailed(
            f"cryo failed collecting {dataset} for blocks {chunk.start}..{chunk.end} from {rpc_url}: "
            f"{type(exc).__name__}: {exc} (cryo prints the details on stderr)"
        ) from exc
    table: pa.Table = frame.to_arrow()
    _check_names(table, dataset)
    return table


async def extract(
    rpc_url: str,
    chunk: Chunk,
    datasets: Sequence[Dataset],
    *,
    rpc: RetryingRpc,
    concurrency: int = 4,
    max_retries: int = 8,
    initial_backoff_ms: int = 250,
    batch_blocks: int = 50,
) -> dict[Dataset, pa.Table]:
    """Every dataset of ``chunk``, one cryo collect after the other, in the engines' columns.

    cryo 0.3.2 has no transaction count of a block: ``n_transactions`` is asked of the node by
    each block's hash through ``rpc`` (:func:`~operators.cryo_ingest.engines.rpc.transaction_counts`).
    """
    tables: dict[Dataset, pa.Table] = {}
    for dataset in datasets:
        table = await collect(rpc_url, dataset, chunk, concurrency=concurrency, max_retries=max_retries,
                              initial_backoff_ms=initial_backoff_ms)
        added: dict[str, pa.Array] = {}
        if dataset == "blocks":
            blocks = list(zip(table.column("block_number").to_pylist(),
                              table.column("block_hash").to_pylist(), strict=True))
            counts = await transaction_counts(rpc, blocks, batch_blocks=batch_blocks, concurrency=concurrency)
            added["n_transactions"] = pa.array(counts, pa.uint32())
        tables[dataset] = to_columns(table, dataset, added)
    return tables
