"""An in-memory :class:`QueueDriver` for unit tests of the logic around it (no I/O).

It keeps the port's contract as the Postgres driver does: a received message is invisible for
``visibility_s`` and comes back unless acknowledged; one nacked on its ``max_receives``-th receive,
or received that many times without an ack, moves to ``dead`` with its last error.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from dispatcher.queue.driver import Delivery


@dataclass
class _Message:
    id: int
    body: bytes
    receives: int = 0
    last_error: str | None = None


@dataclass
class MemoryQueueDriver:
    max_receives: int = 5
    visibility_s: float = 30.0
    queues: dict[str, deque[_Message]] = field(default_factory=dict)
    dead: dict[str, list[tuple[bytes, str]]] = field(default_factory=dict)
    # received, not yet acked: queue -> message id -> (message, loop time it becomes visible again)
    in_flight: dict[str, dict[int, tuple[_Message, float]]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    async def publish(self, queue: str, bodies: Sequence[bytes]) -> None:
        q = self.queues.setdefault(queue, deque())
        q.extend(_Message(next(self._ids), bytes(b)) for b in bodies)
        self._notify()

    async def receive(self, queue: str, *, max_messages: int, wait_s: float) -> list[Delivery]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        q = self.queues.setdefault(queue, deque())
        while True:
            wake = self._wake  # replaced at every notification: no waiter can miss one
            next_visible = self._expire(queue, loop.time())
            out: list[Delivery] = []
            flight = self.in_flight.setdefault(queue, {})
            while q and len(out) < max_messages:
                msg = q.popleft()
                msg.receives += 1
                flight[msg.id] = (msg, loop.time() + self.visibility_s)
                out.append(Delivery(queue, msg.body, msg.receives, msg))
            remaining = deadline - loop.time()
            if out or remaining <= 0:
                return out
            timeout = remaining if next_visible is None else min(remaining, next_visible - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), max(timeout, 0.0))

    def _expire(self, queue: str, now: float) -> float | None:
        """Give back (or bury) messages whose visibility ran out; returns the next such time."""
        flight = self.in_flight.get(queue, {})
        upcoming = None
        for msg_id, (msg, visible_at) in sorted(flight.items()):
            if visible_at > now:
                upcoming = visible_at if upcoming is None else min(upcoming, visible_at)
                continue
            del flight[msg_id]
            if msg.receives >= self.max_receives:
                error = msg.last_error or f"received {msg.receives} times without an ack"
                self.dead.setdefault(queue, []).append((msg.body, error))
            else:
                self.queues.setdefault(queue, deque()).append(msg)
        return upcoming

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        for d in deliveries:
            msg = self._message(d)
            self.in_flight.get(d.queue, {}).pop(msg.id, None)

    async def nack(self, delivery: Delivery, error: str) -> None:
        msg = self._message(delivery)
        flight = self.in_flight.get(delivery.queue, {})
        if msg.id not in flight or msg.receives != delivery.receives:
            return  # acked already, or received again since: this receipt is stale
        del flight[msg.id]
        msg.last_error = error
        if msg.receives >= self.max_receives:
            self.dead.setdefault(delivery.queue, []).append((msg.body, error))
        else:
            self.queues.setdefault(delivery.queue, deque()).append(msg)
            self._notify()

    async def close(self) -> None:
        return None

    def _notify(self) -> None:
        self._wake.set()
        self._wake = asyncio.Event()

    @staticmethod
    def _message(delivery: Delivery) -> _Message:
        if not isinstance(delivery.receipt, _Message):
            raise TypeError("not a delivery of this driver")
        return delivery.receipt
