"""The confirmed head: never read a block that a reorg may still replace."""

from __future__ import annotations

from typing import Any, Protocol

from operators.cryo_ingest.errors import NotYetConfirmed
from operators.range_splitter import Chunk
from tracekit.errors import ConfigError
from tracekit.jsonrpc import hex_to_int


class Caller(Protocol):
    async def call(self, method: str, *params: Any) -> Any: ...


async def confirmed_head(rpc: Caller, confirmations: int) -> int:
    """The node's head minus ``confirmations`` (negative while the chain is shorter than that)."""
    if isinstance(confirmations, bool) or not isinstance(confirmations, int) or confirmations < 0:
        raise ConfigError(f"confirmations must be an integer >= 0, got {confirmations!r}")
    return hex_to_int(await rpc.call("eth_blockNumber"), "eth_blockNumber") - confirmations


def check_confirmed(chunk: Chunk, confirmed: int) -> None:
    """Raise :class:`NotYetConfirmed` when ``chunk`` ends above the ``confirmed`` head. Pure."""
    if chunk.end > confirmed:
        raise NotYetConfirmed(
            f"chunk {chunk.start}..{chunk.end} reaches past the confirmed head {confirmed} "
            f"({chunk.end - confirmed} block(s) to go); nothing was read"
        )
