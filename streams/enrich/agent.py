"""The Faust enrichment worker: a chain's blocks -> typed Transfer and StakeChange records.

Each batch of block/reorg events is decoded and enriched (labels seen within seconds of a change,
USD values from the price book) and produced, keyed by chain, onto
``trace.chain.<id>.transfers`` and ``trace.chain.<id>.stake_changes`` with one idempotent
producer (one partition per topic: chain order). Each topic carries, in chain order:

* a block's records, then a ``BlockEnd`` naming the block and how many records it had there (also
  when none): a consumer learns every block's hash at its height, even a block that replaced
  another without a Reorg event it saw (the follower re-emits after a crash);
* every ``Reorg`` event, the same record with the same idempotency key, so a consumer can drop
  the records of orphaned blocks.

Records are encoded for their topic (with a schema registry, subjects are ``{topic}-{record}``).
The agent moves on (and Faust commits the source offsets) only after the broker acknowledged the
batch: at-least-once, every record carrying its idempotency key (also as a header).
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
from streams.enrich.records import Outgoing, block_records
from streams.enrich.resources import Lookups
from tracekit.avro.wire import AvroCodec
from tracekit.kafka import EventProducer
from tracekit.names import BLOCK, REORG, stake_changes_topic, transfers_topic


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
    app = ca.app
    url = config.database_url.get_secret_value()
    key = str(config.chain_id).encode()
    transfers, stakes = transfers_topic(config.chain_id), stake_changes_topic(config.chain_id)
    codecs = {t: AvroCodec(registry_url=config.schema_registry_url, topic=t) for t in (transfers, stakes)}
    resources = EnrichResources(url, config.kafka_bootstrap, f"trace-enrich-{config.chain_id}")

    def outgoing(lookups: Lookups, name: str, datum: dict[str, Any]) -> list[Outgoing]:
        """``(topic, schema, record)`` for one event of the blocks topic, in the order to send."""
        if name != BLOCK:  # a reorg: every subscriber must see it, in order
            return [(topic, REORG, datum) for topic in codecs]
        events = decode_block(datum, staking_contracts=config.staking_contracts)
        enriched = enrich(events, lookups.labels, lookups.prices, config.token_decimals)
        return block_records(datum, enriched, transfers=transfers, stake_changes=stakes)

    @app.agent(ca.source, name="enrich")
    async def enrich_blocks(stream: Any) -> None:
        async for batch in stream.take_events(500, within=0.01):
            lookups, producer = await resources.get()
            acks = []
            for _, name, datum in await decode_batch(ca, batch, stage="enrich", dead_letter=False):
                for topic, schema, record in outgoing(lookups, name, datum):
                    headers = [("trace-type", schema.encode()),
                               ("trace-idempotency-key", str(record["idempotency_key"]).encode())]
                    value = codecs[topic].encode(schema, record)
                    acks.append(producer.produce(topic, key, value, headers))
            await asyncio.gather(*acks)  # only then may Faust commit these offsets

    return app
