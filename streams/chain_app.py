"""What every Faust worker on a chain's topics shares: the app, its topics, decoding.

Each worker (hot-table sink, alert evaluator, enrichment) is its own consumer group on
``trace.chain.<id>.blocks``, tuned for the embedded broker too (short session timeout, short
fetch wait, web server on the configured host); the transfer sink is one on the chain's
transfers and stake-changes topics (:meth:`ChainApp.on` adds a topic to the same app).
:func:`decode_batch` decodes and checks a batch with the topic's check; an unusable message is
dead-lettered by the topic's sink (one copy in ``<topic>.dlq``) and skipped, counted, by the
others. A retryable decode failure (the schema registry is down) is waited out, never dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import faust
from prometheus_client import Counter

from streams import faust_transport
from streams.config import SinkConfig
from streams.deadletter import send_to_dead_letter
from streams.hot_sink.plan import check_event
from streams.hot_tables.plan import InvalidEvent
from tracekit.avro.wire import AvroCodec
from tracekit.errors import DecodeError, RetryableError
from tracekit.names import dead_letter_topic
from tracekit.retry import Backoff, retry

log = logging.getLogger("trace.streams")

SKIPPED = Counter(
    "trace_skipped_messages_total",
    "Unusable messages skipped (the sink dead-letters them)",
    ["topic", "stage"],
)


Check = Callable[[int, str, dict[str, Any]], None]  # (chain id, record name, datum); raises InvalidEvent


@dataclass(frozen=True)
class ChainApp:
    """A Faust app and one of the chain's topics it consumes: source, dead-letter topic, codec, check."""

    app: faust.App
    source: Any  # faust topic
    dlq: Any
    codec: AvroCodec
    chain_id: int
    check: Check = check_event
    schema_registry_url: str | None = None

    def on(self, topic: str, check: Check) -> ChainApp:
        """The same app on another topic of the chain, with that topic's check."""
        return replace(self, **_topic_parts(self.app, topic, self.schema_registry_url), check=check)


def _topic_parts(app: faust.App, topic: str, registry_url: str | None) -> dict[str, Any]:
    return {
        "source": app.topic(topic, value_type=bytes, key_type=bytes, partitions=1),
        "dlq": app.topic(dead_letter_topic(topic), value_type=bytes, key_type=bytes, partitions=1),
        "codec": AvroCodec(registry_url=registry_url, topic=topic),
    }


def chain_app(
    name: str,
    config: SinkConfig,
    *,
    topic: str | None = None,
    check: Check = check_event,
    commit_every: int | None = None,
) -> ChainApp:
    """The worker's app on ``topic`` (default: the chain's blocks topic, checked by
    :func:`~streams.hot_sink.plan.check_event`); :meth:`ChainApp.on` adds another topic."""
    extra: dict[str, Any] = {} if commit_every is None else {"broker_commit_every": commit_every}
    app = faust.App(
        f"trace-{name}-{config.chain_id}",
        broker=f"{faust_transport.SCHEME}://{config.kafka_bootstrap}",
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=True,
        web_bind=config.web_host,
        web_host=config.web_host,
        web_port=config.web_port,
        broker_session_timeout=6.0,  # tansu delays every group join by half of it
        broker_heartbeat_interval=1.0,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        topic_partitions=1,
        store="memory://",
        datadir=str(config.data_dir),
        **extra,
    )
    return ChainApp(
        app=app,
        chain_id=config.chain_id,
        check=check,
        schema_registry_url=config.schema_registry_url,
        **_topic_parts(app, topic or config.topic, config.schema_registry_url),
    )


async def _decode(codec: AvroCodec, payload: bytes) -> tuple[str, dict[str, Any]]:
    """The record, waiting out a retryable failure (the schema registry unreachable): never dropped."""

    async def decode() -> tuple[str, dict[str, Any]]:
        return codec.decode(payload)

    def waiting(exc: RetryableError, delay: float) -> None:
        log.warning("cannot decode yet, retrying in %.1fs: %s", delay, exc)

    return await retry(decode, on=RetryableError, backoff=Backoff(0.2, 5.0), on_error=waiting)


async def decode_batch(
    ca: ChainApp, batch: Sequence[Any], *, stage: str, dead_letter: bool
) -> list[tuple[Any, str, dict[str, Any]]]:
    """``(message, record name, datum)`` of the usable events of a Faust ``take_events`` batch."""
    decoded = []
    for event in batch:
        message = event.message
        try:
            name, datum = await _decode(ca.codec, message.value)
            ca.check(ca.chain_id, name, datum)
        except (DecodeError, InvalidEvent, KeyError, TypeError) as exc:
            if dead_letter:
                await send_to_dead_letter(ca.dlq, message, stage, f"{type(exc).__name__}: {exc}")
            else:
                SKIPPED.labels(message.topic, stage).inc()
                log.warning("skipped %s/%s/%s: %s", message.topic, message.partition, message.offset, exc)
            continue
        decoded.append((message, name, datum))
    return decoded
