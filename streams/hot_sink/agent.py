"""The Faust hot-table sink: the chain's block/reorg events -> reorg-correct Postgres tables.

Events are taken in batches (``take_events``), decoded, checked, planned (pure, ``plan.py``) and
applied in one transaction (``writer.py``); Faust commits the offsets after the agent moved past
them, so a crash replays at most the last batches, which the idempotent writes absorb.
Undecodable or invalid messages go to the dead-letter topic with the reason. A database outage
is waited out (the batch is retried); a batch the database rejects for its content is applied
event by event so only the offending event is dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
import psycopg
from prometheus_client import Counter, Histogram

from streams import faust_transport
from streams.deadletter import send_to_dead_letter
from streams.hot_sink.plan import REORG, InvalidEvent, check_event, plan
from streams.hot_sink.writer import HotTableWriter
from tracekit.avro.wire import AvroCodec
from tracekit.config import SinkConfig, dead_letter_topic
from tracekit.errors import DecodeError, RetryableError

log = logging.getLogger("trace.sink")

APPLIED = Counter("trace_sink_events_total", "Events applied to the hot tables", ["chain_id", "type"])
BATCH_SECONDS = Histogram("trace_sink_batch_seconds", "Time to apply one batch", ["chain_id"])


def make_app(config: SinkConfig) -> faust.App:
    """The Faust app of one chain's hot-table sink, tuned for the embedded broker too."""
    app = faust.App(
        f"trace-hot-sink-{config.chain_id}",
        broker=f"{faust_transport.SCHEME}://{config.kafka_bootstrap}",
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=True,
        web_bind=config.web_host,
        web_host=config.web_host,
        web_port=config.web_port,
        broker_session_timeout=6.0,  # tansu delays every group join by half of it
        broker_heartbeat_interval=1.0,
        broker_commit_every=config.batch_max,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        topic_partitions=1,
        store="memory://",
        datadir=str(config.data_dir),
    )
    source = app.topic(config.topic, value_type=bytes, key_type=bytes, partitions=1)
    dlq = app.topic(dead_letter_topic(config.topic), value_type=bytes, key_type=bytes, partitions=1)
    codec = AvroCodec(registry_url=config.schema_registry_url, topic=config.topic)
    chain = str(config.chain_id)
    state: dict[str, HotTableWriter] = {}

    async def writer() -> HotTableWriter:
        if "writer" not in state:
            state["writer"] = await HotTableWriter.connect(config.database_url.get_secret_value())
        return state["writer"]

    async def apply_with_retry(ops: list[Any]) -> None:
        delay = 0.2
        while True:
            try:
                await (await writer()).apply(ops)
                return
            except psycopg.OperationalError as exc:
                log.warning("database unavailable, retrying in %.1fs: %s", delay, exc)
                stale = state.pop("writer", None)
                if stale is not None:
                    await stale.close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def decode_with_retry(payload: bytes) -> tuple[str, dict[str, Any]]:
        delay = 0.2
        while True:
            try:
                return codec.decode(payload)
            except RetryableError as exc:  # e.g. the schema registry is unreachable: wait, never drop
                log.warning("cannot decode yet, retrying in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    @app.agent(source, name="hot-sink")
    async def hot_sink(stream: Any) -> None:
        async for batch in stream.take_events(config.batch_max, within=config.batch_within):
            decoded: list[tuple[Any, str, dict[str, Any]]] = []
            for event in batch:
                message = event.message
                try:
                    name, datum = await decode_with_retry(message.value)
                    check_event(config.chain_id, name, datum)
                except (DecodeError, InvalidEvent, KeyError, TypeError) as exc:
                    await send_to_dead_letter(dlq, message, "decode", f"{type(exc).__name__}: {exc}")
                    continue
                decoded.append((message, name, datum))
            if not decoded:
                continue
            with BATCH_SECONDS.labels(chain).time():
                try:
                    await apply_with_retry(plan((n, d) for _, n, d in decoded))
                except (psycopg.errors.DataError, psycopg.errors.IntegrityError):
                    for message, name, datum in decoded:  # isolate the offending event
                        try:
                            await apply_with_retry(plan([(name, datum)]))
                        except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
                            await send_to_dead_letter(dlq, message, "apply", f"{type(exc).__name__}: {exc}")
            for _, name, _ in decoded:
                APPLIED.labels(chain, "reorg" if name == REORG else "block").inc()

    return app
