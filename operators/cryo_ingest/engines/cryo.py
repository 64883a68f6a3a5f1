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
any other set of columns (another cryo version) raises :class:`CryoSchemaMismatch`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from operators.cryo_ingest.columns import SCHEMAS, Dataset
from operators.cryo_ingest.errors import CryoFailed
from operators.range_splitter import Chunk
from tracekit.errors import TraceError

_NOT_OURS = (KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError)


class CryoSchemaMismatch(TraceError):
    """cryo returned other columns than operators.cryo_ingest.columns lists (another cryo version?)."""


def cryo_blocks(chunk: Chunk) -> list[str]:
    """cryo's block-range argument for ``chunk``: end-exclusive."""
    return [f"{chunk.start}:{chunk.end + 1}"]


def conform(table: pa.Table, dataset: Dataset) -> pa.Table:
    """``table`` (cryo's frame as Arrow) with exactly the dataset's columns, order and types."""
    schema = SCHEMAS[dataset]
    if sorted(table.column_names) != sorted(schema.names):
        raise CryoSchemaMismatch(
            f"cryo returned {dataset} columns {table.column_names}, expected {schema.names}"
        )
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
    """One dataset of ``chunk`` through cryo, as an Arrow table in cryo's columns."""
    kwargs: dict[str, Any] = {
        "blocks": cryo_blocks(chunk),
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
    return conform(frame.to_arrow(), dataset)


async def extract(
    rpc_url: str,
    chunk: Chunk,
    datasets: Sequence[Dataset],
    *,
    concurrency: int = 4,
    max_retries: int = 8,
    initial_backoff_ms: int = 250,
) -> dict[Dataset, pa.Table]:
    """Every dataset of ``chunk``, one cryo collect after the other."""
    return {
        dataset: await collect(rpc_url, dataset, chunk, concurrency=concurrency, max_retries=max_retries,
                               initial_backoff_ms=initial_backoff_ms)
        for dataset in datasets
    }
