"""A small async JSON-RPC 2.0 client with batching, over httpx.

Errors are mapped here: an unreachable endpoint raises :class:`RpcUnavailable` (retryable), a
JSON-RPC error object raises :class:`RpcError`, and a reply without the expected shape raises
:class:`BadRpcData`. web3.py is deliberately not used on the hot path: its result formatting
dominates fetch cost (see docs/architecture.md).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import httpx
import orjson

from tracekit.errors import BadRpcData, RpcError, RpcUnavailable

Call = tuple[str, Sequence[Any]]


class RpcClient:
    """``await client.call("eth_blockNumber")`` or ``await client.batch([(method, params), ...])``."""

    def __init__(self, url: str, *, timeout: float = 30.0, max_connections: int = 8) -> None:
        self.url = url
        self._ids = itertools.count(1)
        self._http = httpx.AsyncClient(
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"content-type": "application/json"},
        )

    async def __aenter__(self) -> RpcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(self, body: bytes) -> Any:
        try:
            response = await self._http.post(self.url, content=body)
        except httpx.TransportError as exc:
            raise RpcUnavailable(f"JSON-RPC endpoint {self.url} is unreachable: {exc!r}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise RpcUnavailable(f"JSON-RPC endpoint {self.url} answered HTTP {response.status_code}")
        if response.status_code != 200:
            raise RpcError(f"JSON-RPC endpoint {self.url} answered HTTP {response.status_code}")
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise BadRpcData(f"JSON-RPC endpoint {self.url} returned invalid JSON") from exc

    @staticmethod
    def _result(method: str, reply: Any) -> Any:
        if not isinstance(reply, dict):
            raise BadRpcData(f"{method}: reply is not a JSON object")
        error = reply.get("error")
        if error is not None:
            message = error.get("message", error) if isinstance(error, dict) else error
            raise RpcError(f"{method} failed: {message}")
        if "result" not in reply:
            raise BadRpcData(f"{method}: reply has neither result nor error")
        return reply["result"]

    async def call(self, method: str, *params: Any) -> Any:
        request = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}
        return self._result(method, await self._post(orjson.dumps(request)))

    async def batch(self, calls: Sequence[Call]) -> list[Any]:
        """Send ``calls`` as one JSON-RPC batch; results come back in call order.

        The first call that failed raises its :class:`RpcError`; see :meth:`batch_settled`.
        """
        results = await self.batch_settled(calls)
        for result in results:
            if isinstance(result, RpcError):
                raise result
        return results

    async def batch_settled(self, calls: Sequence[Call]) -> list[Any]:
        """Like :meth:`batch`, but a failed call's :class:`RpcError` takes its place in the list.

        Transport failures and malformed replies still raise.
        """
        if not calls:
            return []
        first = next(self._ids)
        for _ in range(len(calls) - 1):  # keep ids unique for the next call
            next(self._ids)
        requests = [
            {"jsonrpc": "2.0", "id": first + i, "method": m, "params": list(p)}
            for i, (m, p) in enumerate(calls)
        ]
        replies = await self._post(orjson.dumps(requests))
        if not isinstance(replies, list):
            # Some nodes answer a whole batch with one error object.
            self._result(calls[0][0], replies)
            raise BadRpcData("batch reply is not a JSON array")
        by_id = {r.get("id"): r for r in replies if isinstance(r, dict)}
        results: list[Any] = []
        for i, (method, _params) in enumerate(calls):
            reply = by_id.get(first + i)
            if reply is None:
                raise BadRpcData(f"{method}: batch reply is missing id {first + i}")
            try:
                results.append(self._result(method, reply))
            except RpcError as exc:
                results.append(exc)
        return results


def hex_to_int(value: Any, field: str) -> int:
    """Parse a JSON-RPC quantity (``"0x1a"``), naming the field when it is malformed."""
    if not isinstance(value, str) or not value.startswith("0x"):
        raise BadRpcData(f"{field} should be a hex quantity, got {value!r}")
    try:
        return int(value, 16)
    except ValueError as exc:
        raise BadRpcData(f"{field} should be a hex quantity, got {value!r}") from exc
