"""The dispatcher's outbox publisher: ``queue:<name>`` outbox rows -> ``QueueDriver.publish``.

Rows are marked published only after the driver accepted them; a crash in between publishes
them again, which is harmless (a wake-up for a task that is already leased or done is dropped
by the claim).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from dispatcher.queue.driver import QueueDriver
from tracekit.outbox import OutboxPublisher, OutboxRow, Publish

PREFIX = "queue:"


def to_queue(driver: QueueDriver) -> Publish:
    async def publish(rows: Sequence[OutboxRow]) -> None:
        by_queue: dict[str, list[bytes]] = defaultdict(list)
        for row in rows:
            by_queue[row.destination.removeprefix(PREFIX)].append(row.payload)
        for queue, bodies in by_queue.items():
            await driver.publish(queue, bodies)

    return publish


def queue_publisher(url: str, driver: QueueDriver, *, sweep_every: float = 0.25) -> OutboxPublisher:
    return OutboxPublisher(url, to_queue(driver), prefix=PREFIX, sweep_every=sweep_every)
