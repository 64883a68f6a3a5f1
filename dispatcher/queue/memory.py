"""An in-memory :class:`QueueDriver` for unit tests of the logic around it (no I/O)."""

from __future__ import annotations

import asyncio
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


@dataclass
class MemoryQueueDriver:
    max_receives: int = 5
    queues: dict[str, deque[_Message]] = field(default_factory=dict)
    dead: dict[str, list[tuple[bytes, str]]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    async def publish(self, queue: str, bodies: Sequence[bytes]) -> None:
        q = self.queues.setdefault(queue, deque())
        q.extend(_Message(next(self._ids), bytes(b)) for b in bodies)
        self._wake.set()

    async def receive(self, queue: str, *, max_messages: int, wait_s: float) -> list[Delivery]:
        q = self.queues.setdefault(queue, deque())
        if not q:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), wait_s)
            except TimeoutError:
                return []
        out: list[Delivery] = []
        while q and len(out) < max_messages:
            msg = q.popleft()
            msg.receives += 1
            out.append(Delivery(queue, msg.body, msg.receives, msg))
        return out

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Received messages are already out of the queue."""

    async def nack(self, delivery: Delivery, error: str) -> None:
        msg = delivery.receipt
        if not isinstance(msg, _Message):
            raise TypeError("not a delivery of this driver")
        if msg.receives >= self.max_receives:
            self.dead.setdefault(delivery.queue, []).append((msg.body, error))
        else:
            self.queues.setdefault(delivery.queue, deque()).append(msg)
            self._wake.set()

    async def close(self) -> None:
        return None
