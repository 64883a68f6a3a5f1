"""Rate limits: recognise them (pure), back off with jitter (pure), retry a bounded number of times.

:class:`RateLimitAwareClient` is the :class:`~tracekit.jsonrpc.RpcClient` that raises
:class:`~operators.cryo_ingest.errors.RateLimited` for HTTP 429 and for JSON-RPC errors that
mean "slow down" (the base client reports a 429 as a plain ``RpcUnavailable`` and keeps no error
codes). :class:`RetryingRpc` retries such calls with exponential backoff and jitter, honouring a
``Retry-After`` header, and gives up with ``RateLimited`` (retryable) after ``retries`` attempts.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

import httpx

from operators.cryo_ingest.errors import RateLimited
from tracekit.jsonrpc import Call, RpcClient

T = TypeVar("T")

# -32005: EIP-1474 "limit exceeded" (Infura, geth); -32007 QuickNode; -32090 Chainstack;
# 429 as a JSON-RPC code (Alchemy and others).
RATE_LIMIT_CODES: Final = frozenset({-32005, -32007, -32090, 429})
_RATE_LIMIT_WORDS: Final = ("rate limit", "rate-limit", "ratelimit", "too many requests", "exceeded your")


def is_rate_limit_error(error: Any) -> bool:
    """True when a JSON-RPC ``error`` object says the client is being rate limited."""
    if not isinstance(error, dict):
        return isinstance(error, str) and any(w in error.lower() for w in _RATE_LIMIT_WORDS)
    code = error.get("code")
    if isinstance(code, int) and not isinstance(code, bool) and code in RATE_LIMIT_CODES:
        return True
    message = error.get("message")
    return isinstance(message, str) and any(w in message.lower() for w in _RATE_LIMIT_WORDS)


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds (HTTP dates are ignored), None when absent or unusable."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if 0 <= seconds < 3600 else None


def backoff_delay(
    attempt: int, *, base: float, cap: float, rng: random.Random, retry_after: float | None = None
) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): ``min(cap, base * 2**attempt)`` with
    "equal jitter" (half fixed, half uniform random), and never less than ``retry_after``."""
    ceiling = min(cap, base * 2.0 ** min(attempt, 62))
    delay = ceiling / 2 + rng.uniform(0, ceiling / 2)
    return max(delay, retry_after or 0.0)


class RateLimitAwareClient(RpcClient):
    """An :class:`RpcClient` raising :class:`RateLimited` for HTTP 429 and rate-limit error objects."""

    def __init__(self, url: str, *, timeout: float = 30.0, max_connections: int = 8) -> None:
        super().__init__(url, timeout=timeout, max_connections=max_connections)
        self._http.event_hooks["response"] = [self._raise_on_429]

    async def _raise_on_429(self, response: httpx.Response) -> None:
        if response.status_code == 429:
            raise RateLimited(
                f"JSON-RPC endpoint {self.url} answered HTTP 429 (too many requests)",
                retry_after=retry_after_seconds(response.headers.get("retry-after")),
            )

    @staticmethod
    def _result(method: str, reply: Any) -> Any:
        if isinstance(reply, dict) and is_rate_limit_error(reply.get("error")):
            raise RateLimited(f"{method} was rate limited: {reply['error']}")
        return RpcClient._result(method, reply)


class RetryingRpc:
    """``call`` / ``batch`` of a :class:`RateLimitAwareClient`, retried while rate limited."""

    def __init__(
        self,
        client: RpcClient,
        *,
        retries: int = 8,
        base: float = 0.25,
        cap: float = 8.0,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.client = client
        self.retries = retries
        self.base = base
        self.cap = cap
        self.rng = rng or random.Random()
        self.sleep = sleep
        self.rate_limited = 0  # how many answers were rate limits (for logs and tests)

    @property
    def url(self) -> str:
        return self.client.url

    async def _retry(self, what: str, attempt_call: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            try:
                return await attempt_call()
            except RateLimited as exc:
                self.rate_limited += 1
                if attempt >= self.retries:
                    raise RateLimited(
                        f"{what}: still rate limited after {self.retries} retries: {exc}",
                        retry_after=exc.retry_after,
                    ) from exc
                await self.sleep(
                    backoff_delay(attempt, base=self.base, cap=self.cap, rng=self.rng,
                                  retry_after=exc.retry_after)
                )
                attempt += 1

    async def call(self, method: str, *params: Any) -> Any:
        return await self._retry(method, lambda: self.client.call(method, *params))

    async def batch(self, calls: Sequence[Call]) -> list[Any]:
        what = f"batch of {len(calls)} calls ({calls[0][0]}...)" if calls else "empty batch"
        return await self._retry(what, lambda: self.client.batch(calls))
