"""JSON-RPC helpers the dev-chain tools share (on top of :class:`tracekit.jsonrpc.RpcClient`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from tracekit.errors import BadRpcData, RpcError, TraceError
from tracekit.jsonrpc import Call, RpcClient, hex_to_int


async def batch_settled(rpc: RpcClient, calls: Sequence[Call]) -> list[Any | RpcError]:
    """Each call's result, or the :class:`RpcError` it failed with (see ``RpcClient.batch_settled``)."""
    return await rpc.batch_settled(calls)


async def block_number(rpc: RpcClient) -> int:
    return hex_to_int(await rpc.call("eth_blockNumber"), "eth_blockNumber")


async def wait_receipts(
    rpc: RpcClient, tx_hashes: Sequence[str], *, timeout: float = 30.0, poll: float = 0.05
) -> list[dict[str, Any]]:
    """The receipts of ``tx_hashes`` (in order), polling until all are mined or ``timeout``."""
    receipts: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while True:
        missing = [h for h in tx_hashes if h not in receipts]
        if not missing:
            return [receipts[h] for h in tx_hashes]
        found = await rpc.batch([("eth_getTransactionReceipt", [h]) for h in missing])
        for tx_hash, receipt in zip(missing, found, strict=True):
            if receipt is not None:
                if not isinstance(receipt, dict):
                    raise BadRpcData(f"eth_getTransactionReceipt({tx_hash}): not an object")
                receipts[tx_hash] = receipt
        if len(receipts) == len(tx_hashes):
            continue
        if time.monotonic() > deadline:
            raise TraceError(
                f"{len(tx_hashes) - len(receipts)} transaction(s) not mined after {timeout:.0f}s "
                "(is the node mining?)"
            )
        await asyncio.sleep(poll)


def receipt_ok(receipt: dict[str, Any]) -> bool:
    return receipt.get("status") == "0x1"
