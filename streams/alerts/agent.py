"""The Faust alert evaluator: one chain's block/reorg events -> alerts and retractions.

Its own consumer group on the chain's blocks topic. Each batch is decoded, enriched and
evaluated, and everything it decides (alerts, held finalized-tier matches, retractions, the
progress mark, the outbox rows that publish them) is committed in one Postgres transaction
(``pipeline.py``). The outbox publisher, a task of the same worker, sends the rows to the alerts
topic. A timer turns the follower's cursor into lag readings and picks up a newly applied rule
set.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faust
import psycopg
from prometheus_client import Counter, Histogram

from streams.alerts.evaluate import Evaluator
from streams.alerts.pipeline import AlertPipeline
from streams.alerts.rules import RuleSet
from streams.alerts.store import AlertStore, BatchOutcome, active_rule_set
from streams.chain_app import chain_app, decode_batch
from streams.config import AlertsConfig
from streams.enrich.decode import decode_block
from streams.enrich.enrich import enrich
from streams.enrich.model import ChainEvent, LagReading
from streams.enrich.resources import Lookups
from tracekit.avro.wire import AvroCodec
from tracekit.kafka import EventProducer, ensure_topics, outbox_to_kafka
from tracekit.outbox import OutboxPublisher, OutboxRow
from tracekit.retry import Backoff, retry

log = logging.getLogger("trace.alerts")

ALERTS = Counter("trace_alerts_total", "Alerts fired, by rule", ["rule_id", "tier"])
RETRACTIONS = Counter("trace_alert_retractions_total", "Alerts retracted after a reorg", ["rule_id"])
BLOCK_TO_PUBLISHED = Histogram(
    "trace_alert_published_seconds",
    "Block seen by the follower -> alert acknowledged on the alerts topic",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5),
)
BLOCK_TO_DECISION = Histogram(
    "trace_alert_decision_seconds",
    "Block seen by the follower -> alert committed",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5),
)


def empty_rule_set() -> RuleSet:
    return RuleSet.from_json({"rules": []})


@dataclass(slots=True)
class AlertResources:
    """What the alert agent opens on first use: the lookups (once) and the pipeline (again after
    its connection was lost); ``version`` is the rule set it evaluates, ``publisher`` the outbox
    publisher its task runs (woken when a batch fired or retracted alerts)."""

    config: AlertsConfig
    codec: AvroCodec
    lookups: Lookups | None = None
    pipeline: AlertPipeline | None = None
    version: int | None = None
    publisher: OutboxPublisher | None = None

    async def get(self) -> AlertPipeline:
        if self.lookups is None:  # labels seen within seconds of a change; prices reloaded
            self.lookups = await Lookups.open(self.config.database_url.get_secret_value())
        if self.pipeline is None:
            self.pipeline = await self._open_pipeline(self.lookups)
        return self.pipeline

    async def close(self) -> None:
        """Close and forget the pipeline (its connection broke); the next :meth:`get` opens a new one."""
        stale, self.pipeline = self.pipeline, None
        if stale is not None:
            await stale.store.conn.close()

    async def _open_pipeline(self, lookups: Lookups) -> AlertPipeline:
        config = self.config
        conn = await psycopg.AsyncConnection.connect(config.database_url.get_secret_value())
        active = await active_rule_set(conn)
        version, rules = (
            (0, empty_rule_set()) if active is None else (active[0], RuleSet.from_json(active[1]))
        )
        await conn.commit()
        self.version = version

        def enrich_block(block: dict[str, Any]) -> list[ChainEvent]:
            events = decode_block(block, staking_contracts=config.staking_contracts)
            return enrich(events, lookups.labels, lookups.prices, config.token_decimals) if events else events

        pipeline = AlertPipeline(
            config.chain_id,
            AlertStore(conn, self.codec, config.alerts_topic),
            Evaluator(rules, version),
            enrich_block,
            finality_depth=config.finality_depth,
        )
        log.info("evaluating rule set version %d (%d rules)", version, len(rules.rules))
        return pipeline


def make_app(config: AlertsConfig) -> faust.App:
    ca = chain_app("alerts", config)
    app = ca.app
    url = config.database_url.get_secret_value()
    resources = AlertResources(config, ca.codec)

    def account(outcome: BatchOutcome) -> None:
        now = time.time()
        for record in outcome.fired:
            ALERTS.labels(record["rule_id"], record["tier"]).inc()
            if record["observed_at_ms"]:
                BLOCK_TO_DECISION.observe(max(0.0, now - record["observed_at_ms"] / 1000))
        for record in outcome.retracted:
            RETRACTIONS.labels(record["rule_id"]).inc()
        if resources.publisher is not None and (outcome.fired or outcome.retracted):
            resources.publisher.wake.set()

    async def apply_with_retry(events: list[tuple[str, dict[str, Any]]]) -> None:
        async def apply() -> None:
            account(await (await resources.get()).apply(events))

        async def lost(exc: psycopg.OperationalError, delay: float) -> None:
            log.warning("database unavailable, retrying in %.1fs: %s", delay, exc)
            await resources.close()

        await retry(apply, on=psycopg.OperationalError, backoff=Backoff(0.2, 5.0), on_error=lost)

    @app.agent(ca.source, name="alerts")
    async def evaluate(stream: Any) -> None:
        async for batch in stream.take_events(500, within=0.01):
            decoded = [(n, d) for _, n, d in await decode_batch(ca, batch, stage="alerts", dead_letter=False)]
            if decoded:
                await apply_with_retry(decoded)

    async def publish_outbox() -> None:
        ensure_topics(config.kafka_bootstrap, {config.alerts_topic: 1})
        producer = EventProducer(config.kafka_bootstrap, client_id=f"trace-alerts-outbox-{config.chain_id}")
        to_kafka = outbox_to_kafka(producer)

        async def publish(rows: Sequence[OutboxRow]) -> None:
            await to_kafka(rows)
            now = time.time()
            for row in rows:
                observed = int(row.headers.get("trace-observed-at-ms", "0") or 0)
                if observed and row.headers.get("trace-alert-kind") == "ALERT":
                    BLOCK_TO_PUBLISHED.observe(max(0.0, now - observed / 1000))

        publisher = OutboxPublisher(url, publish, exclude_prefix="queue:", sweep_every=0.5)
        resources.publisher = publisher
        try:
            await publisher.run(asyncio.Event())
        finally:
            producer.close()

    async def lag_and_rules() -> None:
        p = await resources.get()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            active = await active_rule_set(conn)
            row = await (
                await conn.execute(
                    "SELECT block_number, head_number FROM state.follower_cursor WHERE chain_id = %s",
                    (config.chain_id,),
                )
            ).fetchone()
        if active is not None and active[0] != resources.version:
            resources.version = active[0]
            p.evaluator = Evaluator(RuleSet.from_json(active[1]), active[0])
            log.info("now evaluating rule set version %d", active[0])
        if row is not None and row[1] is not None:
            cursor, head = int(row[0]), int(row[1])
            reading = LagReading(f"{config.chain_id}:lag:{head}", config.chain_id, head, head - cursor, 0.0)
            account(await p.apply_lag(reading))

    app.task(publish_outbox)
    app.timer(1.0)(lag_and_rules)
    return app
