"""The kernel's retry: backoff delays (pure) and the retry loop, with a recording sleep."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracekit.errors import RetryableError
from tracekit.retry import Backoff, retry


def test_delays_double_up_to_the_maximum_and_reset_starts_over() -> None:
    backoff = Backoff(initial=0.2, maximum=5.0)
    assert [backoff.next() for _ in range(7)] == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0])
    backoff.reset()
    assert backoff.next() == 0.2
    slow = Backoff(initial=1.0, maximum=10.0, multiplier=3.0)
    assert [slow.next() for _ in range(4)] == [1.0, 3.0, 9.0, 10.0]
    assert [Backoff(0.5, 0.5).next() for _ in range(2)] == [0.5, 0.5]


@given(st.floats(0.001, 100), st.floats(1, 10), st.floats(1, 4), st.integers(1, 80))
def test_delays_never_shrink_and_stay_within_bounds(initial: float, spread: float, multiplier: float,
                                                    count: int) -> None:
    backoff = Backoff(initial, initial * spread, multiplier)
    delays = [backoff.next() for _ in range(count)]
    assert delays[0] == initial
    assert all(initial <= d <= initial * spread for d in delays)
    assert delays == sorted(delays)


@pytest.mark.parametrize(("initial", "maximum", "multiplier"),
                         [(0, 1, 2), (-1, 1, 2), (2, 1, 2), (1, 2, 0.5)])
def test_bad_backoffs_are_refused(initial: float, maximum: float, multiplier: float) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(initial, maximum, multiplier)


class Flaky:
    """Fails ``failures`` times with ``error``, then returns "done"."""

    def __init__(self, failures: int, error: BaseException) -> None:
        self.left = failures
        self.error = error
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.left:
            self.left -= 1
            raise self.error
        return "done"


async def test_retry_waits_the_backoff_after_each_error_and_returns_the_result() -> None:
    sleeps: list[float] = []
    seen: list[tuple[str, float]] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    def on_error(exc: RetryableError, delay: float) -> None:
        seen.append((str(exc), delay))

    call = Flaky(4, RetryableError("down"))
    result = await retry(call, on=RetryableError, backoff=Backoff(0.2, 1.0), on_error=on_error, sleep=sleep)
    assert result == "done" and call.calls == 5
    assert sleeps == pytest.approx([0.2, 0.4, 0.8, 1.0])
    assert seen == [("down", d) for d in sleeps]  # told the delay before waiting it


async def test_an_async_on_error_runs_before_the_wait() -> None:
    events: list[str] = []

    async def sleep(seconds: float) -> None:
        events.append(f"sleep {seconds}")

    async def on_error(exc: OSError, delay: float) -> None:
        await asyncio.sleep(0)
        events.append(f"drop connection ({exc}, {delay})")

    call = Flaky(1, ConnectionResetError("reset"))
    assert await retry(call, on=(ConnectionResetError, TimeoutError), backoff=Backoff(1.0, 2.0),
                       on_error=on_error, sleep=sleep) == "done"
    assert events == ["drop connection (reset, 1.0)", "sleep 1.0"]


async def test_other_errors_propagate_at_once() -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    call = Flaky(1, KeyError("bad"))
    with pytest.raises(KeyError):
        await retry(call, on=RetryableError, backoff=Backoff(0.2, 1.0), sleep=sleep)
    assert call.calls == 1 and sleeps == []


async def test_cancellation_stops_the_wait() -> None:
    call = Flaky(100, RetryableError("down"))
    task = asyncio.create_task(retry(call, on=RetryableError, backoff=Backoff(60, 60)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert call.calls == 1
