"""JSON-RPC adapter of the follower: batched fetches of heads, headers and full blocks."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from operators.block_follower.reorg import BlockRef
from operators.block_follower.transform import FetchedBlock, block_record
from tracekit.errors import BadRpcData, ChainMismatch
from tracekit.jsonrpc import RpcClient, hex_to_int


@dataclass(frozen=True, slots=True)
class Header:
    ref: BlockRef
    timestamp: int


def header_of(raw: Any, where: str) -> Header:
    if not isinstance(raw, dict):
        raise BadRpcData(f"{where}: block reply is not an object")
    try:
        ref = BlockRef(
            hex_to_int(raw.get("number"), f"{where} number"),
            str(raw["hash"]).lower(),
            str(raw["parentHash"]).lower(),
        )
    except KeyError as exc:
        raise BadRpcData(f"{where}: block reply lacks {exc}") from exc
    return Header(ref, hex_to_int(raw.get("timestamp"), f"{where} timestamp"))


class ChainReader:
    """Reads one chain's blocks for the follower, in as few round trips as it can."""

    def __init__(self, rpc: RpcClient, chain_id: int) -> None:
        self.rpc = rpc
        self.chain_id = chain_id

    async def check_chain_id(self) -> None:
        served = hex_to_int(await self.rpc.call("eth_chainId"), "eth_chainId")
        if served != self.chain_id:
            raise ChainMismatch(
                f"chain id mismatch: node at {self.rpc.url} serves {served}, configured {self.chain_id} "
                f"(set TRACE_CHAIN_ID)"
            )

    async def head(self) -> Header:
        return header_of(await self.rpc.call("eth_getBlockByNumber", "latest", False), "latest block")

    async def headers(self, numbers: Sequence[int]) -> list[Header | None]:
        replies = await self.rpc.batch([("eth_getBlockByNumber", (hex(n), False)) for n in numbers])
        return [
            None if r is None else header_of(r, f"block {n}")
            for n, r in zip(numbers, replies, strict=True)
        ]

    async def blocks(
        self, numbers: Sequence[int], observed_at_ms: dict[str, int] | None = None
    ) -> list[FetchedBlock | None]:
        """Full blocks with receipts; ``None`` where the node has no block at that height."""
        calls: list[tuple[str, Sequence[Any]]] = []
        for n in numbers:
            calls.append(("eth_getBlockByNumber", (hex(n), True)))
            calls.append(("eth_getBlockReceipts", (hex(n),)))
        replies = await self.rpc.batch(calls)
        now_ms = int(time.time() * 1000)
        out: list[FetchedBlock | None] = []
        for i, n in enumerate(numbers):
            block, receipts = replies[2 * i], replies[2 * i + 1]
            if block is None:
                out.append(None)
                continue
            if not _receipts_match(block, receipts):
                # the chain moved between the two calls: read the receipts by the block's hash
                receipts = await self.rpc.call("eth_getBlockReceipts", block.get("hash"))
                if receipts is None or not _receipts_match(block, receipts):
                    out.append(None)  # the block is gone; the next round sees the reorg
                    continue
            seen = (observed_at_ms or {}).get(str(block.get("hash", "")).lower(), now_ms)
            fetched = block_record(self.chain_id, block, receipts, seen)
            if fetched.ref.number != n:
                raise BadRpcData(f"asked for block {n}, node returned {fetched.ref.number}")
            out.append(fetched)
        return out


def _receipts_match(block: Any, receipts: Any) -> bool:
    txs = block.get("transactions") if isinstance(block, dict) else None
    if not isinstance(txs, list) or not isinstance(receipts, list) or len(txs) != len(receipts):
        return False
    return all(
        isinstance(t, dict) and isinstance(r, dict) and t.get("hash") == r.get("transactionHash")
        for t, r in zip(txs, receipts, strict=True)
    )
