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
from dataclasses import dataclass
from typing import Any

import faust

from streams.chain_app import chain_app, decode_batch
from streams.config import AlertsConfig
from streams.enrich.decode import decode_block
from streams.enrich.enrich import enrich
from streams.enrich.records import typed_record
from streams.enrich.resources import Lookups
from tracekit.kafka import EventProducer
from tracekit.names import BLOCK, stake_changes_topic, transfers_topic


@dataclass(slots=True)
class EnrichResources:
    """The enrich agent's lookups and producer, opened on its first batch."""

    database_url: str
    kafka_bootstrap: str
    client_id: str
    lookups: Lookups | None = None
    producer: EventProducer | None = None

    async def get(self) -> tuple[Lookups, EventProducer]:
        if self.lookups is None:
            self.lookups = await Lookups.open(self.database_url)
        if self.producer is None:
            self.producer = EventProducer(self.kafka_bootstrap, client_id=self.client_id)
        return self.lookups, self.producer


def make_app(config: AlertsConfig) -> faust.App:
    ca = chain_app("enrich", config)
    app, codec = ca.app, ca.codec
    url = config.database_url.get_secret_value()
    key = str(config.chain_id).encode()
    topics = (transfers_topic(config.chain_id), stake_changes_topic(config.chain_id))
    resources = EnrichResources(url, config.kafka_bootstrap, f"trace-enrich-{config.chain_id}")

    @app.agent(ca.source, name="enrich")
    async def enrich_blocks(stream: Any) -> None:
        async for batch in stream.take_events(500, within=0.01):
            lookups, producer = await resources.get()
            acks = []
            for message, name, datum in await decode_batch(ca, batch, stage="enrich", dead_letter=False):
                if name != BLOCK:  # a reorg: every subscriber must see it, in order
                    for topic in topics:
                        acks.append(producer.produce(topic, key, message.value, [("trace-type", b"reorg")]))
                    continue
                events = decode_block(datum, staking_contracts=config.staking_contracts)
                for enriched in enrich(events, lookups.labels, lookups.prices, config.token_decimals):
                    schema, record = typed_record(enriched)
                    topic = topics[0] if schema.endswith("Transfer") else topics[1]
                    value = codec.encode(schema, record)
                    acks.append(producer.produce(topic, key, value, [("trace-type", schema.encode())]))
            await asyncio.gather(*acks)  # only then may Faust commit these offsets

    return app
