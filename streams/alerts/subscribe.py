"""Live subscriptions to alerts and retractions: one stream for the CLI tail and for SSE.

Each subscriber reads the alerts topic with a consumer group of its own and never commits, so
it sees every alert published after it started (or all, ``from_beginning``) without disturbing
anyone else. The Kafka consumer is polled in a worker thread; decoded alerts come out as dicts.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from confluent_kafka import Consumer

from tracekit.avro.wire import AvroCodec
from tracekit.errors import DecodeError
from tracekit.kafka import ensure_topics
from tracekit.names import ALERT, ALERTS_TOPIC


async def alert_stream(
    bootstrap: str,
    *,
    topic: str = ALERTS_TOPIC,
    rule: str | None = None,
    from_beginning: bool = False,
    codec: AvroCodec | None = None,
    poll_timeout: float = 0.2,
) -> AsyncIterator[dict[str, Any]]:
    codec = codec or AvroCodec()
    loop = asyncio.get_running_loop()
    # topics are always pre-created (a broker may auto-create it with other partitions, and a
    # subscription to a missing topic waits for the next metadata refresh)
    await loop.run_in_executor(None, lambda: ensure_topics(bootstrap, {topic: 1}))
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"trace-alert-tail-{uuid.uuid4()}",
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "fetch.wait.max.ms": 50,
        "topic.metadata.refresh.interval.ms": 5000,
    })
    consumer.subscribe([topic])
    try:
        while True:
            msg = await loop.run_in_executor(None, consumer.poll, poll_timeout)
            value = None if msg is None or msg.error() is not None else msg.value()
            if value is None:
                continue
            try:
                name, alert = codec.decode(value)
            except DecodeError:
                continue  # not ours to judge here; the delivery job dead-letters it
            if name != ALERT or (rule is not None and alert["rule_id"] != rule):
                continue
            yield alert
    finally:
        with contextlib.suppress(Exception):
            await loop.run_in_executor(None, consumer.close)
