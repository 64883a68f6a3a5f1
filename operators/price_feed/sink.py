"""Where price points go: ``hot.prices`` (idempotent upsert) and Kafka topic ``trace.prices``.

Message on ``trace.prices`` (JSON, UTF-8), key ``"{token}:{ts}"``::

    {"token": "0x…", "symbol": "TRC" | null, "ts": 1700000000, "usd": "1.2345", "source": "…"}

``usd`` is a decimal string (exact). Re-sending the same point is harmless: consumers key by
(token, ts) and the last value wins, like the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import psycopg
from confluent_kafka import KafkaError, KafkaException, Producer

from operators.price_feed.parse import PricePoint
from tracekit.avro.wire import AvroCodec
from tracekit.errors import RetryableError
from tracekit.names import PRICE, PRICES_TOPIC

_UPSERT = (
    "INSERT INTO hot.prices (token, ts, usd, symbol, source) VALUES (%s, %s, %s, %s, %s)"
    " ON CONFLICT (token, ts) DO UPDATE"
    " SET usd = EXCLUDED.usd, symbol = COALESCE(EXCLUDED.symbol, hot.prices.symbol),"
    " source = EXCLUDED.source, updated_at = now()"
    " WHERE (hot.prices.usd, hot.prices.source) IS DISTINCT FROM (EXCLUDED.usd, EXCLUDED.source)"
    " OR (EXCLUDED.symbol IS NOT NULL AND EXCLUDED.symbol IS DISTINCT FROM hot.prices.symbol)"
)


def upsert_prices(conn: psycopg.Connection[Any], points: Sequence[PricePoint]) -> int:
    """Upsert ``points`` (inside the caller's transaction); returns how many rows changed."""
    if not points:
        return 0
    with conn.cursor() as cur:
        cur.executemany(_UPSERT, [(p.token, p.ts, p.usd, p.symbol, p.source) for p in points])
        return max(cur.rowcount, 0)


def list_prices(
    conn: psycopg.Connection[Any], *, token: str | None = None, limit: int = 50
) -> list[tuple[str, str | None, int, Decimal, str]]:
    """(token, symbol, ts, usd, source), newest first."""
    sql = "SELECT token, symbol, ts, usd, source FROM hot.prices"
    params: list[object] = []
    if token is not None:
        sql += " WHERE token = %s"
        params.append(token.lower())
    params.append(limit)
    rows = conn.execute(sql + " ORDER BY ts DESC, token LIMIT %s", params).fetchall()
    return [(str(t), s, int(ts), Decimal(u), str(src)) for t, s, ts, u, src in rows]


_CODEC = AvroCodec()


def price_record(point: PricePoint) -> dict[str, object]:
    return {
        "token": point.token,
        "symbol": point.symbol,
        "ts": point.ts,
        "usd": str(point.usd),
        "source": point.source,
    }


def encode_point(point: PricePoint) -> tuple[bytes, bytes]:
    """(key, value) of the ``trace.prices`` message of ``point``: Avro, naming its schema."""
    return f"{point.token}:{point.ts}".encode(), _CODEC.encode(PRICE, price_record(point))


class PricePublisher:
    """Publishes points to ``trace.prices``; :meth:`publish` returns once the broker acked all."""

    def __init__(self, bootstrap: str, *, topic: str = PRICES_TOPIC, timeout: float = 30.0) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.timeout = timeout
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "client.id": "trace-price-feed",
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
            }
        )

    def ensure_topic(self) -> None:
        from tracekit.kafka import ensure_topics

        ensure_topics(self.bootstrap, {self.topic: 1})

    def publish(self, points: Sequence[PricePoint]) -> None:
        errors: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                errors.append(err.str())

        for point in points:
            key, value = encode_point(point)
            while True:
                try:
                    self._producer.produce(self.topic, key=key, value=value, on_delivery=on_delivery)
                    break
                except BufferError:
                    self._producer.poll(0.05)
                except KafkaException as exc:
                    raise RetryableError(f"cannot publish to {self.topic}: {exc}") from exc
        left = self._producer.flush(self.timeout)
        if left:
            raise RetryableError(f"Kafka at {self.bootstrap} did not confirm {left} price message(s)")
        if errors:
            raise RetryableError(f"Kafka rejected {len(errors)} price message(s): {errors[0]}")
