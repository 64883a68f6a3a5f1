"""Rate limits: recognised by code or words, jittered exponential backoff, bounded retries."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.cryo_ingest.errors import RateLimited
from operators.cryo_ingest.ratelimit import (
    RateLimitAwareClient,
    RetryingRpc,
    backoff_delay,
    is_rate_limit_error,
    retry_after_seconds,
)
from tracekit.errors import RetryableError, RpcError, RpcUnavailable
from tracekit.jsonrpc import Call


@pytest.mark.parametrize(
    ("error", "limited"),
    [
        ({"code": -32005, "message": "limit exceeded"}, True),
        ({"code": 429, "message": "Your app has exceeded its compute units per second capacity"}, True),
        ({"code": -32007, "message": "request limit reached"}, True),
        ({"code": -32000, "message": "daily request count exceeded, request rate limited"}, True),
        ({"code": -32000, "message": "Too Many Requests"}, True),
        ({"code": -32000, "message": "header not found"}, False),
        ({"code": -32601, "message": "the method does not exist"}, False),
        ({"code": True, "message": "nope"}, False),
        ("rate limit exceeded", True),
        ("execution reverted", False),
        (None, False),
    ],
)
def test_rate_limit_errors_are_recognised(error: Any, limited: bool) -> None:
    assert is_rate_limit_error(error) is limited


def test_retry_after() -> None:
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds(" 0.5 ") == 0.5
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("-1") is None
    assert retry_after_seconds("99999") is None


@given(
    attempt=st.integers(min_value=0, max_value=200),
    base=st.floats(min_value=0.001, max_value=2),
    cap=st.floats(min_value=0.01, max_value=60),
    seed=st.integers(),
    retry_after=st.none() | st.floats(min_value=0, max_value=100),
)
def test_backoff_is_jittered_exponential_and_capped(
    attempt: int, base: float, cap: float, seed: int, retry_after: float | None
) -> None:
    ceiling = min(cap, base * 2.0**attempt)
    delay = backoff_delay(attempt, base=base, cap=cap, rng=random.Random(seed), retry_after=retry_after)
    assert delay >= (retry_after or 0.0)
    if retry_after is None or retry_after <= ceiling / 2:
        assert ceiling / 2 <= delay <= ceiling


def test_backoff_grows_then_stays_capped() -> None:
    rng = random.Random(1)
    ceilings = [backoff_delay(i, base=0.25, cap=8, rng=rng) for i in range(10)]
    assert ceilings[0] <= 0.25 and ceilings[3] >= 1.0 and max(ceilings) <= 8


class FakeClient:
    """Raises the scripted errors first, then answers."""

    url = "http://fake"

    def __init__(self, errors: Sequence[BaseException]) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def call(self, method: str, *params: Any) -> Any:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return method

    async def batch(self, calls: Sequence[Call]) -> list[Any]:
        return [await self.call(m, *p) for m, p in calls[:1]]


def retrying(client: FakeClient, sleeps: list[float], retries: int = 3) -> RetryingRpc:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    return RetryingRpc(client, retries=retries, base=1.0, cap=4.0,  # type: ignore[arg-type]
                       rng=random.Random(0), sleep=sleep)


async def test_retries_until_the_limit_lifts() -> None:
    sleeps: list[float] = []
    client = FakeClient([RateLimited("slow down"), RateLimited("slow down", retry_after=3.5)])
    rpc = retrying(client, sleeps)
    assert await rpc.call("eth_blockNumber") == "eth_blockNumber"
    assert client.calls == 3
    assert rpc.rate_limited == 2
    assert 0.5 <= sleeps[0] <= 1.0 and sleeps[1] >= 3.5


async def test_gives_up_after_the_retries_with_a_retryable_error() -> None:
    sleeps: list[float] = []
    client = FakeClient([RateLimited("slow down")] * 10)
    with pytest.raises(RateLimited, match=r"batch of 1 calls \(eth_getLogs...\): still rate limited after "
                                          r"3 retries: slow down") as info:
        await retrying(client, sleeps).batch([("eth_getLogs", ())])
    assert isinstance(info.value, RetryableError) and isinstance(info.value, RpcUnavailable)
    assert client.calls == 4 and len(sleeps) == 3
    assert all(0 < s <= 4.0 for s in sleeps)  # capped


async def test_other_errors_are_not_retried() -> None:
    sleeps: list[float] = []
    client = FakeClient([RpcError("boom")])
    with pytest.raises(RpcError, match="boom"):
        await retrying(client, sleeps).call("eth_chainId")
    assert client.calls == 1 and sleeps == []


def test_the_client_maps_rate_limit_error_objects() -> None:
    reply = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32005, "message": "limit exceeded"}}
    with pytest.raises(RateLimited, match="eth_getLogs was rate limited"):
        RateLimitAwareClient._result("eth_getLogs", reply)
    with pytest.raises(RpcError, match="execution reverted") as info:
        reverted = {"id": 1, "error": {"code": 3, "message": "execution reverted"}}
        RateLimitAwareClient._result("eth_call", reverted)
    assert not isinstance(info.value, RateLimited)
    assert RateLimitAwareClient._result("eth_chainId", {"id": 1, "result": "0x1"}) == "0x1"


async def test_the_client_maps_http_429() -> None:
    client = RateLimitAwareClient("http://127.0.0.1:9")
    try:
        with pytest.raises(RateLimited, match="answered HTTP 429") as info:
            await client._raise_on_429(httpx.Response(429, headers={"retry-after": "2"}))
        assert info.value.retry_after == 2.0
        await client._raise_on_429(httpx.Response(200))
    finally:
        await client.aclose()
