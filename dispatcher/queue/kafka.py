"""``KafkaQueueDriver``: wake-ups on a Kafka topic (Redpanda in production, tansu locally).

Queue ``q`` is the topic ``{prefix}{q}``; workers share one consumer group, so each wake-up
reaches one of them. ``ack`` commits offsets; ``nack`` re-publishes the message with its receive
count in a header (then commits it), and after ``max_receives`` sends it to ``{topic}.dead``.
Kafka has no per-message visibility timeout: a worker that dies before acking leaves its
partition's uncommitted messages to be redelivered after the rebalance, which is harmless.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence

from confluent_kafka import Consumer, KafkaException, TopicPartition

from dispatcher.queue.driver import Delivery
from tracekit.errors import RetryableError
from tracekit.kafka import EventProducer, ensure_topics

RECEIVES = "trace-receives"
ERROR = "trace-error"


class KafkaQueueDriver:
    def __init__(self, bootstrap: str, *, group: str = "trace-workers", prefix: str = "trace.wakeups.",
                 partitions: int = 4, max_receives: int = 5, client_id: str = "trace-queue") -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.prefix = prefix
        self.partitions = partitions
        self.max_receives = max_receives
        self._producer = EventProducer(bootstrap, client_id=client_id)
        self._consumers: dict[str, Consumer] = {}
        self._lock = threading.Lock()
        self._created: set[str] = set()

    def topic(self, queue: str) -> str:
        return f"{self.prefix}{queue}"

    def _ensure(self, queue: str) -> str:
        topic = self.topic(queue)
        if topic not in self._created:
            ensure_topics(self.bootstrap, {topic: self.partitions, f"{topic}.dead": 1})
            self._created.add(topic)
        return topic

    async def publish(self, queue: str, bodies: Sequence[bytes]) -> None:
        topic = self.topic(queue)
        if topic not in self._created:
            await asyncio.to_thread(self._ensure, queue)  # admin calls block: not on the loop
        await self._send(topic, bodies, receives=0, error=None)

    async def _send(self, topic: str, bodies: Sequence[bytes], *, receives: int, error: str | None) -> None:
        headers = [(RECEIVES, str(receives).encode())]
        if error is not None:
            headers.append((ERROR, error.encode()[:1000]))
        await asyncio.gather(*(self._producer.produce(topic, body, body, headers) for body in bodies))

    def _consumer(self, queue: str) -> Consumer:
        with self._lock:
            consumer = self._consumers.get(queue)
            if consumer is None:
                topic = self._ensure(queue)
                consumer = Consumer({
                    "bootstrap.servers": self.bootstrap,
                    "group.id": self.group,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "session.timeout.ms": 6000,
                    "fetch.wait.max.ms": 50,
                })
                consumer.subscribe([topic])
                self._consumers[queue] = consumer
            return consumer

    async def receive(self, queue: str, *, max_messages: int, wait_s: float) -> list[Delivery]:
        consumer = await asyncio.to_thread(self._consumer, queue)
        try:
            # consume(n, timeout) waits until it has n messages or the timeout ran out: wait for
            # the first one only, then take what is already fetched
            first = await asyncio.to_thread(consumer.poll, wait_s)
            messages = [] if first is None else [first]
            if first is not None and max_messages > 1:
                messages += await asyncio.to_thread(consumer.consume, max_messages - 1, 0)
        except KafkaException as exc:
            raise RetryableError(f"queue {queue}: receive failed: {exc}") from exc
        out = []
        for msg in messages:
            if msg.error() is not None:
                continue
            out.append(Delivery(queue, bytes(msg.value() or b""), _receives(msg.headers()) + 1,
                                (msg.topic(), msg.partition(), msg.offset())))
        return out

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        by_queue: dict[str, dict[tuple[str, int], int]] = {}
        for d in deliveries:
            receipt = d.receipt
            if not isinstance(receipt, tuple):
                raise TypeError("not a delivery of this driver")
            topic, partition, offset = receipt
            marks = by_queue.setdefault(d.queue, {})
            marks[(topic, partition)] = max(marks.get((topic, partition), -1), offset + 1)
        for queue, marks in by_queue.items():
            consumer = self._consumers[queue]
            offsets = [TopicPartition(t, p, o) for (t, p), o in marks.items()]
            await asyncio.to_thread(consumer.commit, offsets=offsets, asynchronous=False)

    async def nack(self, delivery: Delivery, error: str) -> None:
        topic = self.topic(delivery.queue)
        if delivery.receives >= self.max_receives:
            await self._send(f"{topic}.dead", [delivery.body], receives=delivery.receives, error=error)
        else:
            await self._send(topic, [delivery.body], receives=delivery.receives, error=error)
        await self.ack([delivery])

    async def close(self) -> None:
        for consumer in self._consumers.values():
            await asyncio.to_thread(consumer.close)
        self._consumers.clear()
        await asyncio.to_thread(self._producer.close)

    def __repr__(self) -> str:
        return f"KafkaQueueDriver({self.bootstrap!r}, group={self.group!r})"


def _receives(headers: Mapping[str, str | bytes | None] | Sequence[tuple[str, str | bytes | None]] | None,
              ) -> int:
    """How many times a message was received before it was (re)published: its header, else 0."""
    raw = (headers if isinstance(headers, Mapping) else dict(headers or [])).get(RECEIVES)
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
    return int(text) if text is not None and text.isascii() and text.isdigit() else 0
