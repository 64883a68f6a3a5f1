"""What the node says at a few heights, for :func:`dispatcher.datasets.integrity.check_node`.

One JSON-RPC batch (the kernel's client): ``eth_getBlockByNumber`` of each height and, when the
logs are checked too, ``eth_getLogs`` of that block. Synchronous for the committer's thread; an
unreachable node raises :class:`~tracekit.errors.RpcUnavailable` (the commit is tried again later).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dispatcher.datasets.integrity import NodeBlock
from tracekit.errors import BadRpcData
from tracekit.jsonrpc import Call, RpcClient, hex_to_int


def node_blocks(rpc_url: str, heights: Sequence[int], *, logs: bool = False,
                timeout: float = 30.0) -> dict[int, NodeBlock | None]:
    """The node's block at each height (None: it has none); with ``logs``, their log counts."""
    if not heights:
        return {}
    # a thread of its own: the caller may be inside an event loop (asyncio.run refuses to nest)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="integrity-rpc") as pool:
        return pool.submit(asyncio.run, _fetch(rpc_url, heights, logs, timeout)).result()


async def _fetch(rpc_url: str, heights: Sequence[int], logs: bool,
                 timeout: float) -> dict[int, NodeBlock | None]:
    calls: list[Call] = [("eth_getBlockByNumber", (hex(h), False)) for h in heights]
    if logs:
        calls += [("eth_getLogs", ({"fromBlock": hex(h), "toBlock": hex(h)},)) for h in heights]
    async with RpcClient(rpc_url, timeout=timeout, max_connections=1) as client:
        replies = await client.batch(calls)
    found: dict[int, NodeBlock | None] = {}
    for i, h in enumerate(heights):
        n_logs = None
        if logs:
            entries = replies[len(heights) + i]
            if not isinstance(entries, list):
                raise BadRpcData(f"eth_getLogs of block {h}: the reply is not a list")
            n_logs = len(entries)
        found[h] = None if replies[i] is None else _block(h, replies[i], n_logs)
    return found


def _block(height: int, block: Any, n_logs: int | None) -> NodeBlock:
    try:
        number = hex_to_int(block["number"], "number")
        if number != height:
            raise BadRpcData(f"eth_getBlockByNumber({height}) returned block {number}")
        return NodeBlock(number, bytes.fromhex(block["hash"][2:]), bytes.fromhex(block["parentHash"][2:]),
                         len(block["transactions"]), n_logs)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRpcData(f"eth_getBlockByNumber({height}): malformed block ({exc!r})") from exc
