"""The running job: one intake thread (Kafka -> Postgres) and sender threads (Postgres -> out).

Crash safety: the intake commits Kafka offsets only after the batch's delivery rows are committed
in Postgres (re-reading is harmless: ``delivery_id`` is deterministic, inserts are ``ON CONFLICT DO
NOTHING``); a sender records each attempt as started before calling out, and the outcome after.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from pydantic import SecretStr

from operators.alert_route import metrics
from operators.alert_route.channels import send
from operators.alert_route.config import RoutesConfig
from operators.alert_route.logic import (
    build_payload,
    channel_target,
    decide,
    delivery_id,
    matching_routes,
)
from operators.alert_route.store import GaveUp, NewDelivery, claim, finish, insert_deliveries
from tracekit.avro.wire import AvroCodec
from tracekit.errors import DecodeError, RetryableError, SchemaError
from tracekit.names import ALERT, ALERTS_TOPIC

log = logging.getLogger("trace.alert_route")

DEFAULT_GROUP = "trace-alert-route"


@dataclass(frozen=True)
class RouteJob:
    """Everything ``run`` needs; built by the CLI."""

    config: RoutesConfig
    secrets: dict[str, SecretStr]
    database_url: str
    kafka_bootstrap: str
    topic: str = ALERTS_TOPIC
    group: str = DEFAULT_GROUP
    senders: int = 2
    poll_interval_s: float = 0.2
    batch_max: int = 500
    restart_delay_s: float = 1.0
    session_timeout_ms: int = 10000


def plan_deliveries(config: RoutesConfig, alert: dict[str, Any]) -> list[NewDelivery]:
    """The delivery rows one decoded alert (or retraction) gives, one per matching route."""
    rows = []
    kind = str(alert["kind"])
    for route in matching_routes(config, alert):
        did = delivery_id(alert["alert_id"], kind, route.name)
        channel, target = channel_target(route)
        rows.append(NewDelivery(did, alert["alert_id"], kind, route.name, channel, target,
                                build_payload(alert, route.name, did)))
    return rows


def _connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True, connect_timeout=10)


# -- intake -----------------------------------------------------------------------------------


def intake_batch(job: RouteJob, codec: AvroCodec, conn: psycopg.Connection[Any],
                 messages: list[Message]) -> tuple[int, dict[tuple[str, int], int]]:
    """Insert the batch's deliveries (one transaction); ``(new rows, offsets to commit)``."""
    rows: list[NewDelivery] = []
    offsets: dict[tuple[str, int], int] = {}
    for msg in messages:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", err.str())
            continue
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if topic is None or partition is None or offset is None:
            continue
        offsets[(topic, partition)] = offset + 1
        value = msg.value()
        if value is None:
            metrics.INTAKE.labels("skipped").inc()
            continue
        try:
            name, datum = codec.decode(value)
        except (DecodeError, SchemaError) as exc:
            metrics.INTAKE.labels("undecodable").inc()
            log.error("skipping undecodable message %s[%d]@%d: %s", msg.topic(), msg.partition(),
                      msg.offset(), exc)
            continue
        if name != ALERT:
            metrics.INTAKE.labels("skipped").inc()
            continue
        metrics.INTAKE.labels("alert").inc()
        rows.extend(plan_deliveries(job.config, datum))
    # one row per delivery id within a batch (the same record produced twice)
    unique = list({row.delivery_id: row for row in rows}.values())
    return insert_deliveries(conn, unique), offsets


def run_intake(job: RouteJob, stop: threading.Event) -> None:
    """Consume ``job.topic`` until ``stop``; rows first, then offsets. Restarts itself on failures."""
    codec = AvroCodec()
    while not stop.is_set():
        consumer: Any = None
        conn: psycopg.Connection[Any] | None = None
        try:
            conn = _connect(job.database_url)
            consumer = Consumer({
                "bootstrap.servers": job.kafka_bootstrap,
                "group.id": job.group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "client.id": "trace-alert-route",
                "session.timeout.ms": job.session_timeout_ms,
            })
            consumer.subscribe([job.topic])
            while not stop.is_set():
                messages = consumer.consume(job.batch_max, 0.5)
                if not messages:
                    continue
                new, offsets = intake_batch(job, codec, conn, messages)
                if new:
                    log.info("intake: %d new deliveries from %d messages", new, len(messages))
                if offsets:
                    consumer.commit(
                        offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False
                    )
        except (psycopg.OperationalError, KafkaException, RetryableError) as exc:
            log.warning("intake restarts after: %s", exc)
            stop.wait(job.restart_delay_s)
        finally:
            if consumer is not None:
                consumer.close()  # no commit: auto commit is off
            if conn is not None:
                conn.close()


# -- sender -----------------------------------------------------------------------------------


def _limits(config: RoutesConfig) -> dict[str, tuple[int, float]]:
    return {
        r.name: (r.channel.max_attempts, r.channel.timeout_s + config.retry.lease_grace_s)
        for r in config.routes
    }


def send_one(job: RouteJob, conn: psycopg.Connection[Any], client: httpx.Client,
             on_started: Callable[[str, int], None] | None = None) -> bool:
    """Claim one due delivery, attempt it and record the outcome; False when nothing was due."""
    claimed = claim(conn, _limits(job.config))
    if claimed is None:
        return False
    if isinstance(claimed, GaveUp):
        metrics.DEAD_LETTERS.labels(claimed.route).inc()
        log.warning("delivery %s (%s) is dead: %s", claimed.delivery_id, claimed.route, claimed.error)
        return True
    if on_started is not None:
        on_started(claimed.delivery_id, claimed.attempt)
    result, max_attempts = send(client, job.config, job.secrets, claimed)
    decision = decide(result.outcome, result.http_status, claimed.attempt, max_attempts, job.config.retry)
    if decision.status == "dead" and result.error is None:
        result = type(result)(result.outcome, result.http_status, "given up")
    applied = finish(conn, claimed, result.outcome, result.http_status, result.error, decision)
    metrics.ATTEMPTS.labels(claimed.route, result.outcome).inc()
    if not applied:
        return True
    if decision.status == "delivered":
        observed = claimed.payload.get("observed_at_ms") or claimed.payload.get("fired_at_ms") or 0
        if observed:
            metrics.LATENCY.labels(claimed.route).observe(max(0.0, time.time() - observed / 1000))
    elif decision.status == "dead":
        metrics.DEAD_LETTERS.labels(claimed.route).inc()
        log.warning("delivery %s (%s, alert %s) is dead after attempt %d: %s", claimed.delivery_id,
                    claimed.route, claimed.alert_id, claimed.attempt, result.error)
    else:
        log.info("delivery %s attempt %d failed (%s), retry in %.2f s", claimed.delivery_id,
                 claimed.attempt, result.error, decision.retry_in_s or 0.0)
    return True


def run_sender(job: RouteJob, stop: threading.Event) -> None:
    """Deliver due rows until ``stop``; restarts its connection on Postgres failures."""
    with httpx.Client(follow_redirects=False, trust_env=False) as client:
        while not stop.is_set():
            conn: psycopg.Connection[Any] | None = None
            try:
                conn = _connect(job.database_url)
                while not stop.is_set():
                    if not send_one(job, conn, client):
                        stop.wait(job.poll_interval_s)
            except psycopg.OperationalError as exc:
                log.warning("sender restarts after: %s", exc)
                stop.wait(job.restart_delay_s)
            finally:
                if conn is not None:
                    conn.close()


# -- both -------------------------------------------------------------------------------------


def run(job: RouteJob, stop: threading.Event, *, intake: bool = True) -> None:
    """Run the intake and ``job.senders`` sender threads until ``stop`` is set (or one of them fails)."""
    failures: list[BaseException] = []

    def guarded(target: Callable[[RouteJob, threading.Event], None]) -> Callable[[], None]:
        def body() -> None:
            try:
                target(job, stop)
            except BaseException as exc:
                log.exception("%s failed", target.__name__)
                failures.append(exc)
                stop.set()
        return body

    threads = [threading.Thread(target=guarded(run_sender), name=f"alert-sender-{i}", daemon=True)
               for i in range(job.senders)]
    if intake:
        threads.append(threading.Thread(target=guarded(run_intake), name="alert-intake", daemon=True))
    for thread in threads:
        thread.start()
    try:
        while not stop.is_set():
            stop.wait(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    if failures:
        raise failures[0]
