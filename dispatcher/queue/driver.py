"""The port every wake-up queue implements (SQS, Postgres and Kafka have the same shape)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Delivery:
    """One received message; hand it back to :meth:`QueueDriver.ack` or ``nack``."""

    queue: str
    body: bytes
    receives: int  # how many times it has been received, this time included
    receipt: object  # driver-specific handle


class QueueDriver(Protocol):
    """At-least-once queue of small messages. Poison messages (nacked or received
    ``max_receives`` times without an ack) end in a dead-letter place, never in an endless loop."""

    async def publish(self, queue: str, bodies: Sequence[bytes]) -> None:
        """Send ``bodies``; returns once the queue has accepted them durably."""

    async def receive(self, queue: str, *, max_messages: int, wait_s: float) -> list[Delivery]:
        """Up to ``max_messages`` messages, waiting at most ``wait_s`` for the first."""

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """The messages were handled: never deliver them again."""

    async def nack(self, delivery: Delivery, error: str) -> None:
        """The message could not be handled: deliver it again later, or dead-letter it."""

    async def close(self) -> None: ...
