"""Kafka adapter: an idempotent producer whose deliveries can be awaited, and topic creation.

confluent-kafka (librdkafka) is used for producing: idempotent (``enable.idempotence``, so
``acks=all``), ordered per key. Delivery reports are served by a background thread calling
``poll``; each ``produce`` returns an asyncio future resolved when the broker confirmed the write,
so a caller advances its cursor only after that.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from tracekit.errors import RetryableError, TraceError
from tracekit.outbox import OutboxRow, Publish


class DeliveryFailed(RetryableError):
    """The broker did not confirm a message."""


class EventProducer:
    """``fut = producer.produce(topic, key, value, headers)``; ``await fut`` waits for the ack."""

    def __init__(self, bootstrap: str, *, client_id: str, extra: Mapping[str, Any] | None = None) -> None:
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "client.id": client_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 1,
            "batch.num.messages": 1000,
            "message.max.bytes": 16 * 1024 * 1024,
            "queue.buffering.max.kbytes": 512 * 1024,
        }
        config.update(extra or {})
        self._producer = Producer(config)
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name=f"{client_id}-delivery", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def produce(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            loop.call_soon_threadsafe(_settle, future, err)

        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=list(headers),
                                       on_delivery=on_delivery)
                return future
            except BufferError:
                self._producer.poll(0.01)  # local queue full: let deliveries drain
            except KafkaException as exc:
                raise DeliveryFailed(f"cannot produce to {topic}: {exc}") from exc

    def flush(self, timeout: float = 30.0) -> int:
        return int(self._producer.flush(timeout))

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        self._stop.set()
        self._poller.join(timeout=2)


def _settle(future: asyncio.Future[None], err: KafkaError | None) -> None:
    if future.done():
        return
    if err is None:
        future.set_result(None)
    else:
        future.set_exception(DeliveryFailed(f"broker did not confirm the message: {err.str()}"))


def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    *,
    configs: Mapping[str, str] | None = None,
    timeout: float = 15.0,
) -> list[str]:
    """Create the missing ``topics`` ({name: partitions}); returns those created.

    Topics are always pre-created: brokers that auto-create topics choose their own partition
    count, and a chain's topic must have exactly one partition to keep its events in order.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise RetryableError(f"Kafka at {bootstrap} is unreachable: {exc}") from exc
    missing = [name for name in topics if name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=topics[name], replication_factor=1, config=dict(configs or {}))
         for name in missing],
        operation_timeout=timeout,
    )
    created = []
    for name, fut in futures.items():
        try:
            fut.result(timeout)
            created.append(name)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise TraceError(f"cannot create topic {name}: {exc}") from exc
    return created


def outbox_to_kafka(producer: EventProducer) -> Publish:
    """An outbox ``publish`` callable: each row to the topic it names; returns once all are acked."""

    async def publish(rows: Sequence[OutboxRow]) -> None:
        futures = [
            producer.produce(row.destination, row.key or b"", row.payload,
                             [(k, v.encode()) for k, v in row.headers.items()])
            for row in rows
        ]
        await asyncio.gather(*futures)

    return publish
