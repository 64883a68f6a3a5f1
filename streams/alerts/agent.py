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
from streams.enrich.labels import LabelCache
from streams.enrich.model import ChainEvent, LagReading
from streams.enrich.prices import PriceBook
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


def make_app(config: AlertsConfig) -> faust.App:
    ca = chain_app("alerts", config)
    app = ca.app
    codec = ca.codec
    url = config.database_url.get_secret_value()
    state: dict[str, Any] = {}

    def enrich_block(block: dict[str, Any]) -> list[ChainEvent]:
        events = decode_block(block, staking_contracts=config.staking_contracts)
        return enrich(events, state["labels"], state["prices"], config.token_decimals) if events else events

    async def pipeline() -> AlertPipeline:
        if "labels" not in state:  # labels seen within seconds of a change; prices reloaded
            labels = LabelCache(url)
            await labels.start()
            state["labels"] = labels
            state["prices"] = await PriceBook.load(url)
            state["prices_task"] = asyncio.create_task(state["prices"].refresh_forever(url, 10.0))
        if "pipeline" not in state:
            conn = await psycopg.AsyncConnection.connect(url)
            active = await active_rule_set(conn)
            version, rules = (
                (0, empty_rule_set()) if active is None else (active[0], RuleSet.from_json(active[1]))
            )
            await conn.commit()
            state["version"] = version
            state["pipeline"] = AlertPipeline(
                config.chain_id,
                AlertStore(conn, codec, config.alerts_topic),
                Evaluator(rules, version),
                enrich_block,
                finality_depth=config.finality_depth,
            )
            log.info("evaluating rule set version %d (%d rules)", version, len(rules.rules))
        p: AlertPipeline = state["pipeline"]
        return p

    def account(outcome: BatchOutcome) -> None:
        now = time.time()
        for record in outcome.fired:
            ALERTS.labels(record["rule_id"], record["tier"]).inc()
            if record["observed_at_ms"]:
                BLOCK_TO_DECISION.observe(max(0.0, now - record["observed_at_ms"] / 1000))
        for record in outcome.retracted:
            RETRACTIONS.labels(record["rule_id"]).inc()
        publisher = state.get("publisher")
        if publisher is not None and (outcome.fired or outcome.retracted):
            publisher.wake.set()

    async def apply_with_retry(events: list[tuple[str, dict[str, Any]]]) -> None:
        async def apply() -> None:
            account(await (await pipeline()).apply(events))

        async def lost(exc: psycopg.OperationalError, delay: float) -> None:
            log.warning("database unavailable, retrying in %.1fs: %s", delay, exc)
            stale = state.pop("pipeline", None)
            if stale is not None:
                await stale.store.conn.close()

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
        state["publisher"] = publisher
        try:
            await publisher.run(asyncio.Event())
        finally:
            producer.close()

    async def lag_and_rules() -> None:
        p = await pipeline()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            active = await active_rule_set(conn)
            row = await (
                await conn.execute(
                    "SELECT block_number, head_number FROM state.follower_cursor WHERE chain_id = %s",
                    (config.chain_id,),
                )
            ).fetchone()
        if active is not None and active[0] != state.get("version"):
            state["version"] = active[0]
            p.evaluator = Evaluator(RuleSet.from_json(active[1]), active[0])
            log.info("now evaluating rule set version %d", active[0])
        if row is not None and row[1] is not None:
            cursor, head = int(row[0]), int(row[1])
            reading = LagReading(f"{config.chain_id}:lag:{head}", config.chain_id, head, head - cursor, 0.0)
            account(await p.apply_lag(reading))

    app.task(publish_outbox)
    app.timer(1.0)(lag_and_rules)
    return app
