"""Retry with exponential backoff: :class:`Backoff` says how long to wait (pure), :func:`retry`
is the loop that waits.

``Backoff(initial=0.2, maximum=5.0)`` gives 0.2, 0.4, 0.8, ... 5.0, 5.0 seconds; ``reset()`` after
a success starts over. A loop that reconnects forever (a LISTEN connection, a WebSocket
subscription) uses a ``Backoff`` directly; a call that must eventually succeed (a write while the
database restarts) is ``await retry(call, on=psycopg.OperationalError, backoff=...)``. The wait
is an injectable ``sleep``, so tests never sleep. No jitter: each user is one process retrying
one resource. (Task retries across workers are the dispatcher's pure ``lease.backoff``.)
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)


@dataclass(slots=True)
class Backoff:
    """Delays growing by ``multiplier`` from ``initial`` up to ``maximum`` seconds."""

    initial: float
    maximum: float
    multiplier: float = 2.0
    _next: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError("backoff needs 0 < initial <= maximum")
        if self.multiplier < 1:
            raise ValueError("backoff multiplier must be at least 1")
        self._next = self.initial

    def next(self) -> float:
        """The delay to wait now; the one after it is ``multiplier`` times longer, at most ``maximum``."""
        delay = self._next
        self._next = min(delay * self.multiplier, self.maximum)
        return delay

    def reset(self) -> None:
        """Start over from ``initial`` (after a success)."""
        self._next = self.initial


async def retry(
    call: Callable[[], Awaitable[T]],
    *,
    on: type[E] | tuple[type[E], ...],
    backoff: Backoff,
    on_error: Callable[[E, float], Awaitable[None] | None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Await ``call()`` until it returns, and return its result.

    After each error of a type in ``on``: ``on_error(error, delay)`` (log it, drop a broken
    connection; sync or async), then wait ``delay = backoff.next()`` seconds and call again. Other
    errors, and cancellation, propagate at once.
    """
    while True:
        try:
            return await call()
        except on as exc:
            delay = backoff.next()
            if on_error is not None:
                outcome = on_error(exc, delay)
                if inspect.isawaitable(outcome):
                    await outcome
            await sleep(delay)
