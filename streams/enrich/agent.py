"""The Faust enrichment worker: a chain's blocks -> typed Transfer and StakeChange records.

Each batch of block/reorg events is decoded and enriched (labels seen within seconds of a change,
USD values from the price book) and produced, keyed by chain, onto
``trace.chain.<id>.transfers`` and ``trace.chain.<id>.stake_changes`` with the idempotent
producer. Reorg events are passed through to both topics in order, so a subscriber can drop the
records of orphaned blocks. The agent moves on (and Faust commits the source offsets) only after
the broker acknowledged the batch: at-least-once, every record carrying its idempotency key.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust

from streams import faust_transport
from streams.deadletter import send_to_dead_letter
from streams.enrich.decode import decode_block
from streams.enrich.enrich import enrich
from streams.enrich.labels import LabelCache
from streams.enrich.prices import PriceBook
from streams.enrich.records import stake_changes_topic, transfers_topic, typed_record
from streams.hot_sink.plan import BLOCK, InvalidEvent, check_event
from tracekit.avro.wire import AvroCodec
from tracekit.config import AlertsConfig, dead_letter_topic
from tracekit.errors import DecodeError
from tracekit.kafka import EventProducer


def make_app(config: AlertsConfig) -> faust.App:
    app = faust.App(
        f"trace-enrich-{config.chain_id}",
        broker=f"{faust_transport.SCHEME}://{config.kafka_bootstrap}",
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=True,
        web_bind=config.web_host,
        web_host=config.web_host,
        web_port=config.web_port,
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        topic_partitions=1,
        store="memory://",
        datadir=str(config.data_dir),
    )
    source = app.topic(config.topic, value_type=bytes, key_type=bytes, partitions=1)
    dlq = app.topic(dead_letter_topic(config.topic), value_type=bytes, key_type=bytes, partitions=1)
    codec = AvroCodec(registry_url=config.schema_registry_url, topic=config.topic)
    url = config.database_url.get_secret_value()
    key = str(config.chain_id).encode()
    topics = (transfers_topic(config.chain_id), stake_changes_topic(config.chain_id))
    state: dict[str, Any] = {}

    async def ready() -> tuple[LabelCache, PriceBook, EventProducer]:
        if "labels" not in state:
            labels = LabelCache(url)
            await labels.start()
            state["labels"] = labels
            state["prices"] = await PriceBook.load(url)
            state["prices_task"] = asyncio.create_task(state["prices"].refresh_forever(url, 10.0))
            state["producer"] = EventProducer(
                config.kafka_bootstrap, client_id=f"trace-enrich-{config.chain_id}"
            )
        return state["labels"], state["prices"], state["producer"]

    @app.agent(source, name="enrich")
    async def enrich_blocks(stream: Any) -> None:
        async for batch in stream.take_events(500, within=0.01):
            labels, prices, producer = await ready()
            acks = []
            for event in batch:
                message = event.message
                try:
                    name, datum = codec.decode(message.value)
                    check_event(config.chain_id, name, datum)
                except (DecodeError, InvalidEvent, KeyError, TypeError) as exc:
                    await send_to_dead_letter(dlq, message, "enrich", f"{type(exc).__name__}: {exc}")
                    continue
                if name != BLOCK:  # a reorg: every subscriber must see it, in order
                    for topic in topics:
                        acks.append(producer.produce(topic, key, message.value, [("trace-type", b"reorg")]))
                    continue
                events = decode_block(datum, staking_contracts=config.staking_contracts)
                for enriched in enrich(events, labels, prices, config.token_decimals):
                    schema, record = typed_record(enriched)
                    topic = topics[0] if schema.endswith("Transfer") else topics[1]
                    value = codec.encode(schema, record)
                    acks.append(producer.produce(topic, key, value, [("trace-type", schema.encode())]))
            await asyncio.gather(*acks)  # only then may Faust commit these offsets

    return app
