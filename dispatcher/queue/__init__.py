"""Wake-up queues: the :class:`QueueDriver` port, its Postgres and Kafka adapters and a fake.

A message is a wake-up, never the truth: its body is a task id and nothing else. Losing one
delays a task until a worker's idle poll finds it; delivering one twice is harmless, because a
claim is a fenced update in Postgres.
"""

from typing import Any

from dispatcher.queue.driver import Delivery, QueueDriver

__all__ = ["Delivery", "QueueDriver", "open_queue"]


async def open_queue(kind: str, *, database_url: str, kafka_bootstrap: str | None = None,
                     visibility_s: float = 30.0) -> QueueDriver:
    """The configured driver (``TRACE_QUEUE``): ``pg`` (a table + LISTEN/NOTIFY) or ``kafka``."""
    if kind == "pg":
        from psycopg_pool import AsyncConnectionPool

        from dispatcher.queue.pg import PgQueueDriver

        class OwnPoolPgQueueDriver(PgQueueDriver):
            async def close(self) -> None:
                await super().close()
                await self.pool.close()

        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(database_url, min_size=1, max_size=4, open=False)
        await pool.open(wait=True, timeout=30)
        return OwnPoolPgQueueDriver(pool, database_url, visibility_s=visibility_s)
    if kind == "kafka":
        from dispatcher.queue.kafka import KafkaQueueDriver

        if not kafka_bootstrap:
            raise ValueError("TRACE_QUEUE=kafka needs TRACE_KAFKA_BOOTSTRAP")
        return KafkaQueueDriver(kafka_bootstrap)
    raise ValueError(f"TRACE_QUEUE must be pg or kafka, not {kind!r}")
