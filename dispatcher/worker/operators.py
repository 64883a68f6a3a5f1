"""The operators a worker runs: thin adapters from a task's payload (validated once, here, into the
operator's own payload model) to the pure operator code in ``operators/``. Add one by writing
``async def run(ctx) -> outputs`` and naming it in :data:`OPERATORS`."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from dispatcher.protocol import EventIn, OutputIn
from dispatcher.worker.context import Operator, TaskContext
from operators.aggregator import AggregatePayload, aggregate_batch
from operators.cryo_ingest import IngestPayload, NotYetConfirmed, ingest_chunk
from operators.parquet_compact import Compacted, CompactPayload, compact_partition
from operators.range_splitter import SplitPayload
from operators.sql_transform import ResultFile, TransformPayload, transform
from tracekit.errors import ConfigError
from tracekit.iceberg import DatasetTable


async def range_splitter(ctx: TaskContext) -> Sequence[OutputIn]:
    """The run's range -> one event per aligned chunk on the job's output dataset."""
    job = SplitPayload.parse(ctx.payload).event
    if len(ctx.task.writes) != 1:
        raise ConfigError(f"range_splitter writes exactly one dataset, the job declares {ctx.task.writes}")
    dataset = ctx.task.writes[0]
    chunks = job.split()
    events = [EventIn(dataset_id=dataset, partition_key=key, payload=payload)
              for key, payload in map(job.chunk_event, chunks)]
    created = await ctx.emit(events)
    ctx.log("info", f"{len(chunks)} chunks of blocks {job.start_block}..{job.end_block}"
                    f" (size {job.chunk_size}); {created} tasks created")
    return []


async def cryo_ingest(ctx: TaskContext) -> Sequence[OutputIn]:
    """One chunk -> one Parquet file per dataset under this attempt's staging prefix in the store,
    each reported with its URL, rows, bytes and sha256."""
    payload = IngestPayload.parse(ctx.payload)
    chain_id = payload.event.chain_id
    rpc_url = ctx.env.rpc_urls.get(chain_id)
    if rpc_url is None:
        raise ConfigError(f"cryo_ingest: this worker has no RPC URL for chain {chain_id}")
    refused = sorted(set(payload.datasets) - set(ctx.task.writes))
    if refused:
        raise ConfigError(f"cryo_ingest: the job may not write {', '.join(refused)}")
    request = payload.request(rpc_url=rpc_url, prefix=ctx.staging_prefix, confirmations=ctx.env.confirmations)
    chunk = request.chunk
    waited_since = time.monotonic()
    while True:
        ctx.check()
        try:
            files = await ingest_chunk(request, ctx.env.store)
            break
        except NotYetConfirmed as exc:  # the chain will get there: wait (a while) instead of failing
            if time.monotonic() - waited_since > ctx.env.wait_confirmed_s:
                raise
            ctx.log("info", f"waiting: {exc}")
            await ctx.sleep(1.0)
    return [OutputIn(dataset_id=f.dataset, uri=ctx.uri(f.key), rows=f.rows, bytes=f.bytes, sha256=f.sha256,
                     block_start=chunk.start, block_end=chunk.end) for f in files]


async def aggregator(ctx: TaskContext) -> Sequence[OutputIn]:
    """The run's batch of final blocks, read from the hot tables -> one Parquet file per dataset
    (and partition) under this attempt's staging prefix, each reported with its block range."""
    payload = AggregatePayload.parse(ctx.payload)
    if ctx.env.database_url is None:
        raise ConfigError("aggregator: this worker has no database to read the hot tables from"
                          " (TRACE_DATABASE_URL)")
    datasets = payload.config.datasets
    refused = sorted(set(datasets) - set(ctx.task.writes))
    if refused:
        raise ConfigError(f"aggregator: the job may not write {', '.join(refused)}")
    batch = payload.params
    ctx.check()
    files = await asyncio.to_thread(aggregate_batch, ctx.env.database_url, batch.chain_id, batch.chain,
                                    batch.batch, datasets=datasets, finality_depth=ctx.env.confirmations)
    outputs = []
    for f in files:
        ctx.check()
        staged = await ctx.stage_bytes(f.name, f.data)
        outputs.append(OutputIn(dataset_id=f.dataset, uri=staged.uri, rows=f.rows, bytes=staged.bytes,
                                sha256=staged.sha256, block_start=f.start, block_end=f.end))
    ctx.log("info", f"{batch.batch} of chain {batch.chain_id}: " + ", ".join(
        f"{d} {sum(f.rows for f in files if f.dataset == d)} rows" for d in datasets))
    return outputs


async def parquet_compact(ctx: TaskContext) -> Sequence[OutputIn]:
    """One partition of a dataset version, read at the snapshot the run pinned -> one sorted
    Parquet file under this attempt's staging prefix, reported with the run's block range (the
    range the commit replaces)."""
    params = CompactPayload.parse(ctx.payload).params
    open_catalog = ctx.env.open_catalog
    if open_catalog is None:
        raise ConfigError("parquet_compact: this worker cannot open the Iceberg catalog (no warehouse beside"
                          " TRACE_OBJECT_STORE)")
    if params.dataset not in ctx.task.writes:
        raise ConfigError(f"parquet_compact: the job may not write {params.dataset}")
    pinned = params.pinned
    with tempfile.TemporaryDirectory(prefix="trace-compact-") as directory:

        def compact() -> Compacted:
            catalog = open_catalog()
            try:
                table = DatasetTable(catalog, pinned.identifier).table()
                return compact_partition(table, params, Path(directory))
            finally:
                catalog.close()

        ctx.check()
        done = await asyncio.to_thread(compact)
        ctx.check()
        staged = await ctx.stage_file(done.name, done.path)
    ctx.log("info", f"{params.dataset} version {pinned.version}, blocks {params.start_block}.."
                    f"{params.end_block}: {len(done.replaced)} files, {done.rows} rows -> 1 file")
    return [OutputIn(dataset_id=params.dataset, uri=staged.uri, rows=done.rows, bytes=staged.bytes,
                     sha256=staged.sha256, block_start=params.start_block, block_end=params.end_block)]


async def sql_transform(ctx: TaskContext) -> Sequence[OutputIn]:
    """The job's SQL over its inputs, each read at the snapshot the run pinned
    (``params.inputs``) -> the one output dataset's files (one per partition of the result, or
    one) under this attempt's staging prefix, each with the blocks its rows hold. Bad SQL, an
    input the run does not pin, or not exactly one output is one ConfigError line."""
    payload = TransformPayload.parse(ctx.payload)
    if len(ctx.task.writes) != 1:
        declared = ", ".join(ctx.task.writes) or "none"
        raise ConfigError(f"sql_transform: the job must declare exactly one output dataset; it declares "
                          f"{declared}")
    open_catalog = ctx.env.open_catalog
    if open_catalog is None:
        raise ConfigError("sql_transform: this worker cannot open the Iceberg catalog (no warehouse beside"
                          " TRACE_OBJECT_STORE)")
    output = ctx.task.writes[0]

    def run() -> list[ResultFile]:
        catalog = open_catalog()
        try:
            return transform(catalog, payload, output)
        finally:
            catalog.close()

    ctx.check()
    files = await asyncio.to_thread(run)
    outputs = []
    for f in files:
        ctx.check()
        staged = await ctx.stage_bytes(f.name, f.data)
        outputs.append(OutputIn(dataset_id=output, uri=staged.uri, rows=f.rows, bytes=staged.bytes,
                                sha256=staged.sha256, block_start=f.block_start, block_end=f.block_end))
    pins = ", ".join(f"{dataset} v{pin.version}" for dataset, pin in sorted(payload.params.inputs.items()))
    ctx.log("info", f"{output}: {sum(f.rows for f in files)} rows in {len(files)} file(s); pinned inputs: "
                    f"{pins or 'none'}")
    return outputs


OPERATORS: dict[str, Operator] = {"range_splitter": range_splitter, "cryo_ingest": cryo_ingest,
                                  "aggregator": aggregator, "parquet_compact": parquet_compact,
                                  "sql_transform": sql_transform}
