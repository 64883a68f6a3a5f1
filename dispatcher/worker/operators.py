"""The operators a worker runs: thin adapters from a task's payload to the pure operator code
in ``operators/``. Add one by writing ``async def run(ctx) -> outputs`` and naming it in
:data:`OPERATORS`."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from dispatcher.protocol import EventIn, OutputIn
from dispatcher.worker.context import Operator, TaskContext
from operators.cryo_ingest import IngestRequest, NotYetConfirmed, ingest_chunk
from operators.range_splitter import Chunk, chunk_key, split_range
from tracekit.errors import ConfigError


def _get(mapping: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = mapping.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"{where}: {key!r} must be a {kind.__name__}, got {value!r}")
    return value


async def range_splitter(ctx: TaskContext) -> Sequence[OutputIn]:
    """The run's range -> one event per aligned chunk on the job's output dataset."""
    params = ctx.payload.get("event")
    if not isinstance(params, dict):
        raise ConfigError("range_splitter: the task payload has no 'event' object")
    start = _get(params, "start_block", int, "range_splitter")
    end = _get(params, "end_block", int, "range_splitter")
    size = _get(params, "chunk_size", int, "range_splitter")
    chain = _get(params, "chain", str, "range_splitter")
    if len(ctx.task.writes) != 1:
        raise ConfigError(f"range_splitter writes exactly one dataset, the job declares {ctx.task.writes}")
    dataset = ctx.task.writes[0]
    carried = {k: params[k] for k in ("chain_id", "chain", "datasets", "engine") if k in params}
    chunks = split_range(start, end, size)
    events = [EventIn(dataset_id=dataset, partition_key=chunk_key(chain, c),
                      payload={**carried, "start": c.start, "end": c.end}) for c in chunks]
    created = await ctx.emit(events)
    ctx.log("info", f"{len(chunks)} chunks of blocks {start}..{end} (size {size}); {created} tasks created")
    return []


async def cryo_ingest(ctx: TaskContext) -> Sequence[OutputIn]:
    """One chunk -> one Parquet file per dataset in this attempt's staging directory."""
    event = ctx.payload.get("event")
    config = ctx.payload.get("config") or {}
    if not isinstance(event, dict) or not isinstance(config, dict):
        raise ConfigError("cryo_ingest: the task payload needs 'event' and 'config' objects")
    chain_id = _get(event, "chain_id", int, "cryo_ingest")
    rpc_url = ctx.env.rpc_urls.get(chain_id)
    if rpc_url is None:
        raise ConfigError(f"cryo_ingest: this worker has no RPC URL for chain {chain_id}")
    datasets = tuple(event.get("datasets") or config.get("datasets") or ())
    refused = sorted(set(datasets) - set(ctx.task.writes))
    if refused:
        raise ConfigError(f"cryo_ingest: the job may not write {', '.join(refused)}")
    chunk = Chunk(_get(event, "start", int, "cryo_ingest"), _get(event, "end", int, "cryo_ingest"))
    request = IngestRequest(
        rpc_url=rpc_url, chain_id=chain_id, chunk=chunk, output_dir=ctx.staging_dir,
        datasets=datasets or ("blocks", "transactions", "logs"),
        engine=str(event.get("engine") or config.get("engine") or "rpc"),  # type: ignore[arg-type]
        chain=str(event.get("chain") or ""), confirmations=ctx.env.confirmations,
    )
    waited_since = time.monotonic()
    while True:
        ctx.check()
        try:
            files = await ingest_chunk(request)
            break
        except NotYetConfirmed as exc:  # the chain will get there: wait (a while) instead of failing
            if time.monotonic() - waited_since > ctx.env.wait_confirmed_s:
                raise
            ctx.log("info", f"waiting: {exc}")
            await ctx.sleep(1.0)
    return [OutputIn(dataset_id=f.dataset, uri=f.path.resolve().as_uri(), rows=f.rows, bytes=f.bytes,
                     block_start=chunk.start, block_end=chunk.end) for f in files]


OPERATORS: dict[str, Operator] = {"range_splitter": range_splitter, "cryo_ingest": cryo_ingest}
