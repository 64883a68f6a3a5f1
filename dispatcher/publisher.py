"""The dispatcher's outbox publisher: ``queue:<name>`` outbox rows -> ``QueueDriver.publish``.

Rows are marked published only after the driver accepted them; a crash in between publishes
them again, which is harmless (a wake-up for a task that is already leased or done is dropped
by the claim). A transient failure (the queue or the database unreachable for a moment) does not
end the publisher: it starts over after ``retry_s``, and the unmarked rows are sent then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Sequence

import psycopg

from dispatcher.queue.driver import QueueDriver
from tracekit.errors import RetryableError
from tracekit.outbox import OutboxPublisher, OutboxRow, Publish

log = logging.getLogger("trace.dispatcher.publisher")

PREFIX = "queue:"


def to_queue(driver: QueueDriver) -> Publish:
    async def publish(rows: Sequence[OutboxRow]) -> None:
        by_queue: dict[str, list[bytes]] = defaultdict(list)
        for row in rows:
            by_queue[row.destination.removeprefix(PREFIX)].append(row.payload)
        for queue, bodies in by_queue.items():
            await driver.publish(queue, bodies)

    return publish


class QueuePublisher(OutboxPublisher):
    """An :class:`OutboxPublisher` that outlives transient failures of the queue or the database."""

    def __init__(self, url: str, driver: QueueDriver, *, sweep_every: float, retry_s: float) -> None:
        super().__init__(url, to_queue(driver), prefix=PREFIX, sweep_every=sweep_every)
        self.retry_s = retry_s

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await super().run(stop)
            except (RetryableError, psycopg.OperationalError) as exc:
                log.warning("outbox -> queue publisher: %s; starting over in %.1fs", exc, self.retry_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.retry_s)


def queue_publisher(url: str, driver: QueueDriver, *, sweep_every: float = 0.25,
                    retry_s: float = 1.0) -> QueuePublisher:
    return QueuePublisher(url, driver, sweep_every=sweep_every, retry_s=retry_s)
