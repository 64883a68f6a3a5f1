"""Running the price feed: import a file once, or poll an HTTP endpoint until told to stop.

A file is all or nothing: every row is checked first, then all rows are upserted in one
transaction that commits only after Kafka acked every message (so a failed publish stores
nothing; re-running an import is harmless). A polled response is handled the same way; a bad
response or an unreachable endpoint is logged and the next poll tries again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

from operators.price_feed.parse import PriceFeedError, PricePoint, parse_file, parse_records
from operators.price_feed.sink import PricePublisher, upsert_prices
from tracekit.db import connect
from tracekit.errors import RetryableError, TraceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestResult:
    points: int  # valid points read
    changed: int  # rows inserted or updated in hot.prices
    published: int  # messages acked on trace.prices


def store(
    points: Sequence[PricePoint], *, database_url: str, publisher: PricePublisher | None = None
) -> IngestResult:
    """Upsert ``points`` and publish them; the transaction commits after the broker acked."""
    with connect(database_url) as conn, conn.transaction():
        changed = upsert_prices(conn, points)
        if publisher is not None:
            publisher.publish(points)
    return IngestResult(len(points), changed, len(points) if publisher is not None else 0)


def import_file(
    path: Path,
    *,
    database_url: str,
    publisher: PricePublisher | None = None,
    symbols: Mapping[str, str] = {},
    source: str | None = None,
) -> IngestResult:
    """All rows of ``path`` or nothing (:class:`PriceFeedError` ``file:line: field ...``)."""
    points = parse_file(path, symbols=symbols, source=source)
    return store(points, database_url=database_url, publisher=publisher)


def fetch(client: httpx.Client, url: str, *, symbols: Mapping[str, str], source: str) -> list[PricePoint]:
    """One poll: GET ``url``, a JSON list of price objects."""
    try:
        response = client.get(url)
        response.raise_for_status()
        document = response.json()
    except httpx.HTTPStatusError as exc:
        raise RetryableError(f"{url}: HTTP {exc.response.status_code}") from exc
    except httpx.HTTPError as exc:
        raise RetryableError(f"{url}: {type(exc).__name__}: {exc}") from exc
    except ValueError as exc:
        raise PriceFeedError(f"{url}: response is not JSON: {exc}") from exc
    return parse_records(document, url, symbols=symbols, default_source=source)


def poll(
    url: str,
    *,
    interval: float,
    database_url: str,
    publisher: PricePublisher | None = None,
    symbols: Mapping[str, str] = {},
    source: str | None = None,
    stop: threading.Event | None = None,
    timeout: float = 10.0,
) -> int:
    """Poll ``url`` every ``interval`` seconds until ``stop`` is set; returns the polls that stored.

    A bad response (bad row, not JSON, HTTP error, unreachable) is logged and skipped whole.
    """
    stop = stop or threading.Event()
    stored = 0
    with httpx.Client(timeout=timeout) as client:
        while not stop.is_set():
            try:
                points = fetch(client, url, symbols=symbols, source=source or url)
                result = store(points, database_url=database_url, publisher=publisher)
                stored += 1
                log.info("prices from %s: %d points, %d changed", url, result.points, result.changed)
            except (TraceError, psycopg.Error) as exc:
                log.error("price poll skipped: %s", exc)
            stop.wait(interval)
    return stored
