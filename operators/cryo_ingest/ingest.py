"""``ingest_chunk``: one chunk of blocks -> one staged Parquet file per dataset in an object store.

1. Check the node: its chain id must be the request's (else :class:`~tracekit.errors.ChainMismatch`)
   and the chunk must end at or below the confirmed head (else
   :class:`~operators.cryo_ingest.errors.NotYetConfirmed`; nothing is read or written).
2. Extract with the request's engine (``rpc`` or ``cryo``): one Arrow table per dataset in cryo
   0.3.2's columns and types (``blocks`` with ``parent_hash`` and ``n_transactions``).
3. Sort each table in cryo's order and conform it to its dataset's contract
   (:func:`~operators.cryo_ingest.files.file_table`), encode it as Parquet (and its sha256), then
   put each file under the request's key prefix in the store
   (:func:`~operators.cryo_ingest.files.put_tables`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pyarrow as pa

from operators.cryo_ingest.columns import Dataset
from operators.cryo_ingest.engines import cryo as cryo_engine
from operators.cryo_ingest.engines import rpc as rpc_engine
from operators.cryo_ingest.files import file_table, put_tables
from operators.cryo_ingest.head import check_confirmed, confirmed_head
from operators.cryo_ingest.ratelimit import RateLimitAwareClient, RetryingRpc
from operators.cryo_ingest.request import IngestRequest, StagedFile
from tracekit.errors import ChainMismatch
from tracekit.jsonrpc import hex_to_int
from tracekit.objects import ObjectStore


def _stage(req: IngestRequest, tables: Mapping[Dataset, pa.Table], store: ObjectStore) -> list[StagedFile]:
    files = {dataset: file_table(tables[dataset], dataset) for dataset in req.datasets}
    return put_tables(files, store, req.prefix, req.chain, req.chunk, spill_bytes=req.spill_bytes)


async def ingest_chunk(req: IngestRequest, store: ObjectStore) -> list[StagedFile]:
    """Write ``req.chunk`` of every dataset in ``req.datasets`` under ``req.prefix`` in ``store``.

    Returns the staged files in dataset order. Raises ``NotYetConfirmed`` (retryable, nothing
    read) when the chunk ends above the confirmed head, ``RateLimited`` (retryable) when the
    endpoint kept rate limiting, ``BadRpcData`` naming block and field for malformed replies,
    ``CryoFailed`` (retryable) when cryo panicked, ``RpcUnavailable`` when the node is unreachable,
    ``ConformError`` naming column and row when a value does not fit the dataset's contract (nothing
    put), an ``ObjectStoreError`` when the store refused a file (``ObjectStoreUnavailable``:
    retryable).
    """
    client = RateLimitAwareClient(req.rpc_url, timeout=req.timeout_s, max_connections=req.concurrency)
    async with client:
        rpc = RetryingRpc(client, retries=req.rate_limit_retries, base=req.backoff_base_s,
                          cap=req.backoff_max_s)
        chain_id, head = await rpc.batch([("eth_chainId", ()), ("eth_blockNumber", ())])
        served = hex_to_int(chain_id, "eth_chainId")
        if served != req.chain_id:
            raise ChainMismatch(
                f"chain id mismatch: node at {req.rpc_url} serves {served}, the request is for {req.chain_id}"
            )
        node_head = hex_to_int(head, "eth_blockNumber")
        if req.confirmed_head is None:
            confirmed = node_head - req.confirmations
        else:  # the caller's finality, but never above what this node has
            confirmed = min(req.confirmed_head, node_head)
        check_confirmed(req.chunk, confirmed)
        if req.engine == "rpc":
            tables = await rpc_engine.extract(
                rpc, req.chain_id, req.chunk, req.datasets,
                batch_blocks=req.batch_blocks, concurrency=req.concurrency,
            )
        else:
            tables = await cryo_engine.extract(
                req.rpc_url, req.chunk, req.datasets, rpc=rpc, concurrency=req.concurrency,
                max_retries=req.rate_limit_retries, initial_backoff_ms=round(req.backoff_base_s * 1000),
                batch_blocks=req.batch_blocks,
            )
    return await asyncio.to_thread(_stage, req, tables, store)


__all__ = ["confirmed_head", "ingest_chunk"]
