"""The outbox publishes exactly the committed intents, also across a publisher crash."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import psycopg
import pytest
from confluent_kafka import Consumer

from tracekit.kafka import EventProducer, ensure_topics, outbox_to_kafka
from tracekit.outbox import OutboxPublisher, OutboxRow, enqueue

pytestmark = pytest.mark.integration


async def _intents(pg_url: str, topic: str, committed: int, rolled_back: int) -> list[bytes]:
    payloads = []
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        for i in range(committed):
            async with conn.transaction(), conn.cursor() as cur:
                payload = f"{topic}:{i}".encode()
                await enqueue(cur, topic, payload, key=b"k", headers={"n": str(i)})
                payloads.append(payload)
        for i in range(rolled_back):
            with pytest.raises(RuntimeError):
                async with conn.transaction(), conn.cursor() as cur:
                    await enqueue(cur, topic, f"{topic}:aborted:{i}".encode())
                    raise RuntimeError("the intent's transaction fails")
    return payloads


def _read(bootstrap: str, topic: str, expect: int) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    consumer.subscribe([topic])
    got: list[bytes] = []
    try:
        for _ in range(120):
            msg = consumer.poll(0.25)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
            elif got and len(got) >= expect and msg is None:
                break
    finally:
        consumer.close()
    return got


async def test_outbox_publishes_exactly_the_committed_intents_across_a_crash(
    pg_url: str, kafka_bootstrap: str
) -> None:
    topic = f"outbox-test-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka_bootstrap, {topic: 1})
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute("DELETE FROM state.outbox")
    payloads = await _intents(pg_url, topic, committed=30, rolled_back=5)

    producer = EventProducer(kafka_bootstrap, client_id="outbox-test")
    to_kafka = outbox_to_kafka(producer)
    crashed = {"done": False}

    async def crash_after_sending(rows: Sequence[OutboxRow]) -> None:
        await to_kafka(rows[:10])  # sent, but the publisher dies before marking anything
        crashed["done"] = True
        raise ConnectionError("publisher killed mid-batch")

    try:
        first = OutboxPublisher(pg_url, crash_after_sending, batch=20)
        async with await psycopg.AsyncConnection.connect(pg_url) as conn:
            with pytest.raises(ConnectionError):
                await first.publish_once(conn)
        assert crashed["done"]
        async with await psycopg.AsyncConnection.connect(pg_url) as conn:
            unpublished = (await (await conn.execute(
                "SELECT count(*) FROM state.outbox WHERE published_at IS NULL")).fetchone())[0]  # type: ignore[index]
        assert unpublished == 30  # nothing marked: the crash lost nothing

        stop = asyncio.Event()
        second = OutboxPublisher(pg_url, to_kafka, batch=20, sweep_every=0.1)
        task = asyncio.create_task(second.run(stop))
        await asyncio.sleep(2.0)
        stop.set()
        await asyncio.wait_for(task, 10)
    finally:
        producer.close()

    got = _read(kafka_bootstrap, topic, expect=40)
    # at-least-once: the 10 sent before the crash are sent again; every committed intent
    # arrives, in order after dedup, and no rolled-back one ever does
    assert sorted(set(got)) == sorted(payloads)
    assert len(got) == 40
    assert not [g for g in got if b"aborted" in g]
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        left = (await (await conn.execute(
            "SELECT count(*) FROM state.outbox WHERE published_at IS NULL")).fetchone())[0]  # type: ignore[index]
    assert left == 0
