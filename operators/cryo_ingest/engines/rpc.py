"""The ``rpc`` engine: native async JSON-RPC batches -> Arrow tables in cryo's columns.

The chunk is cut into batches of ``batch_blocks`` blocks, ``concurrency`` batches in flight, each
ONE JSON-RPC batch request:

- transactions wanted: ``eth_getBlockByNumber(n, true)`` + ``eth_getBlockReceipts(n)`` per block
  (gas used and status come from the receipts; logs, when wanted, too);
- otherwise ``eth_getBlockByNumber(n, false)`` per block for blocks, and one ``eth_getLogs``
  over the batch's range for logs;
- traces wanted: ``trace_block(n)`` per block (parity-style call traces, :mod:`..traces`).

Each batch is transformed (:mod:`operators.cryo_ingest.transform`) as soon as it arrives, while
the others are in flight; the tables are concatenated in block order at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pyarrow as pa

from operators.cryo_ingest import traces as traces_transform
from operators.cryo_ingest import transform
from operators.cryo_ingest.columns import SCHEMAS, Dataset
from operators.cryo_ingest.ratelimit import RetryingRpc
from operators.range_splitter import Chunk
from tracekit.errors import BadRpcData, RetryableError
from tracekit.jsonrpc import Call, hex_to_int

T = TypeVar("T")

class BlockMissing(RetryableError):
    """The node has no block at a height below the confirmed head (a lagging backend?)."""


class ChainMoved(RetryableError):
    """The chain changed while the chunk was being read (a reorg deeper than the confirmations?)."""


@dataclass(frozen=True)
class _Plan:
    blocks: bool
    transactions: bool
    logs: bool
    traces: bool = False

    @property
    def full_blocks(self) -> bool:
        return self.transactions

    @property
    def block_calls(self) -> bool:
        return self.blocks or self.transactions

    @property
    def logs_by_range(self) -> bool:
        return self.logs and not self.transactions

    @property
    def per_block(self) -> int:
        """Calls per block in a batch, in this order: block, receipts, trace_block."""
        return int(self.block_calls) + int(self.full_blocks) + int(self.traces)


def _calls(plan: _Plan, part: Chunk) -> list[Call]:
    calls: list[Call] = []
    for n in range(part.start, part.end + 1):
        if plan.block_calls:
            calls.append(("eth_getBlockByNumber", (hex(n), plan.full_blocks)))
        if plan.full_blocks:
            calls.append(("eth_getBlockReceipts", (hex(n),)))
        if plan.traces:
            calls.append(("trace_block", (hex(n),)))
    if plan.logs_by_range:
        calls.append(("eth_getLogs", ({"fromBlock": hex(part.start), "toBlock": hex(part.end)},)))
    return calls


def _check_block(block: Any, n: int) -> dict[str, Any]:
    if block is None:
        raise BlockMissing(f"block {n}: the node has no block at this height (a lagging backend?)")
    if not isinstance(block, dict):
        raise BadRpcData(f"block {n}: expected a JSON object, got {type(block).__name__}")
    if block.get("number") != hex(n):
        raise BadRpcData(f"block {n}: field 'number' is {block.get('number')!r}, asked for {hex(n)}")
    return block


def _receipts_match(block: dict[str, Any], receipts: Any) -> bool:
    txs = block.get("transactions")
    if not isinstance(txs, list) or not isinstance(receipts, list) or len(txs) != len(receipts):
        return False
    return all(
        isinstance(t, dict) and isinstance(r, dict) and t.get("hash") == r.get("transactionHash")
        for t, r in zip(txs, receipts, strict=True)
    )


def _check_logs(logs: Any, part: Chunk, hashes: dict[int, str] | None) -> list[dict[str, Any]]:
    if not isinstance(logs, list):
        raise BadRpcData(f"eth_getLogs {part.start}..{part.end}: expected a list, got {type(logs).__name__}")
    for i, log in enumerate(logs):
        if not isinstance(log, dict):
            raise BadRpcData(f"eth_getLogs {part.start}..{part.end}: entry {i} is not a JSON object")
        height = hex_to_int(log.get("blockNumber"), f"log {i} of blocks {part.start}..{part.end}: field "
                                                    "'blockNumber'")
        if not part.start <= height <= part.end:
            raise BadRpcData(f"block {height} log {log.get('logIndex')}: outside the range asked for, "
                             f"{part.start}..{part.end}")
        if hashes is not None and log.get("blockHash") != hashes[height]:
            raise ChainMoved(
                f"block {height}: eth_getLogs returned a log of block {log.get('blockHash')}, "
                f"eth_getBlockByNumber block {hashes[height]}: the chain changed while it was read"
            )
    return logs


def _check_traces(traces: Any, n: int, block_hash: str | None) -> list[dict[str, Any]]:
    """``trace_block(n)``'s reply: a list of traces of block ``n`` (of ``block_hash`` when known)."""
    if traces is None:
        raise BlockMissing(f"block {n}: trace_block found no block at this height (a lagging backend?)")
    if not isinstance(traces, list):
        raise BadRpcData(f"block {n}: trace_block should return a list, got {type(traces).__name__}")
    for i, trace in enumerate(traces):
        if not isinstance(trace, dict):
            raise BadRpcData(f"block {n}: trace {i} of trace_block is not a JSON object")
        number = trace.get("blockNumber")
        if number != n and number != hex(n):
            raise BadRpcData(f"block {n}: trace {i} of trace_block has field 'blockNumber' {number!r}")
        if block_hash is not None and trace.get("blockHash") != block_hash:
            raise ChainMoved(f"block {n}: trace_block returned traces of block {trace.get('blockHash')}, "
                             f"eth_getBlockByNumber block {block_hash}: the chain changed while it was read")
    return traces


@dataclass(frozen=True)
class _Raw:
    blocks: list[dict[str, Any]]
    receipts: list[Any]
    logs: Any
    traces: list[dict[str, Any]]


async def _fetch_part(rpc: RetryingRpc, plan: _Plan, part: Chunk) -> _Raw:
    replies = await rpc.batch(_calls(plan, part))
    per_block = plan.per_block
    blocks: list[dict[str, Any]] = []
    receipts: list[Any] = []
    traces: list[dict[str, Any]] = []
    for i, n in enumerate(range(part.start, part.end + 1)):
        block_hash: str | None = None
        if plan.block_calls:
            block = _check_block(replies[per_block * i], n)
            blocks.append(block)
            block_hash = str(block.get("hash"))
            if plan.full_blocks:
                block_receipts = replies[per_block * i + 1]
                if not _receipts_match(block, block_receipts):
                    # the chain moved between the two calls: read the receipts of exactly this block
                    block_receipts = await rpc.call("eth_getBlockReceipts", block.get("hash"))
                    if block_receipts is None:
                        raise ChainMoved(f"block {n}: block {block.get('hash')} is gone while it was read")
                receipts.append(block_receipts)
        if plan.traces:
            traces.extend(_check_traces(replies[per_block * (i + 1) - 1], n, block_hash))
    return _Raw(blocks, receipts, replies[-1] if plan.logs_by_range else None, traces)


def _tables(chain_id: int, plan: _Plan, part: Chunk, raw: _Raw) -> dict[Dataset, pa.Table]:
    out: dict[Dataset, pa.Table] = {}
    if plan.blocks:
        out["blocks"] = transform.blocks_table(chain_id, raw.blocks)
    if plan.transactions:
        out["transactions"] = transform.transactions_table(chain_id, raw.blocks, raw.receipts)
        if plan.logs:
            out["logs"] = transform.logs_table(chain_id, transform.logs_of_receipts(raw.receipts))
    elif plan.logs:
        hashes = {int(b["number"], 16): str(b.get("hash")) for b in raw.blocks} if plan.blocks else None
        out["logs"] = transform.logs_table(chain_id, _check_logs(raw.logs, part, hashes))
    if plan.traces:
        out["traces"] = traces_transform.traces_table(chain_id, raw.traces)
    return out


def even_parts(chunk: Chunk, batch_blocks: int, concurrency: int) -> list[Chunk]:
    """``chunk`` in batches of at most ``batch_blocks`` blocks, as many as fill whole waves of
    ``concurrency`` requests: 250 blocks at 50 x 4 are 8 batches of <= 32, not 5 of 50, the
    last of which would run alone while three slots idle."""
    n = chunk.end - chunk.start + 1
    count = -(-n // max(1, batch_blocks))
    count = min(n, -(-count // concurrency) * concurrency)
    size = -(-n // count)
    return [Chunk(a, min(a + size - 1, chunk.end)) for a in range(chunk.start, chunk.end + 1, size)]


async def _gather_parts(parts: Sequence[Awaitable[T]]) -> list[T]:
    """Await every part; on the first failure, stop the others still in flight and raise it."""
    tasks = [asyncio.ensure_future(part) for part in parts]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def transaction_counts(
    rpc: RetryingRpc, blocks: Sequence[tuple[int, bytes]], *, batch_blocks: int = 50, concurrency: int = 4
) -> list[int]:
    """How many transactions each block ``(number, hash)`` has, in order: one
    ``eth_getBlockTransactionCountByHash`` per block (by hash: exactly the block that was read),
    ``batch_blocks`` per JSON-RPC batch, ``concurrency`` batches in flight. A block the node no
    longer has is :class:`ChainMoved`."""
    gate = asyncio.Semaphore(concurrency)

    async def one(part: Sequence[tuple[int, bytes]]) -> list[int]:
        async with gate:
            replies = await rpc.batch([("eth_getBlockTransactionCountByHash", ("0x" + h.hex(),))
                                       for _, h in part])
        counts = []
        for (n, h), reply in zip(part, replies, strict=True):
            if reply is None:
                raise ChainMoved(f"block {n}: block 0x{h.hex()} is gone while it was read")
            counts.append(hex_to_int(reply, f"block {n}: eth_getBlockTransactionCountByHash"))
        return counts

    size = max(1, batch_blocks)
    results = await _gather_parts([one(blocks[i:i + size]) for i in range(0, len(blocks), size)])
    return [count for counts in results for count in counts]


async def extract(
    rpc: RetryingRpc,
    chain_id: int,
    chunk: Chunk,
    datasets: Sequence[Dataset],
    *,
    batch_blocks: int = 50,
    concurrency: int = 4,
) -> dict[Dataset, pa.Table]:
    """Read ``chunk`` and return one table per dataset, rows in cryo's order.

    The caller has checked that ``chunk`` is below the confirmed head.
    """
    plan = _Plan("blocks" in datasets, "transactions" in datasets, "logs" in datasets, "traces" in datasets)
    parts = even_parts(chunk, batch_blocks, concurrency)
    gate = asyncio.Semaphore(concurrency)

    async def one(part: Chunk) -> dict[Dataset, pa.Table]:
        async with gate:  # the requests in flight; transforming a batch frees its slot
            raw = await _fetch_part(rpc, plan, part)
        return _tables(chain_id, plan, part, raw)

    results = await _gather_parts([one(part) for part in parts])  # the first failure wins
    if not results:
        return {dataset: SCHEMAS[dataset].empty_table() for dataset in datasets}
    return {dataset: pa.concat_tables([r[dataset] for r in results]) for dataset in datasets}
