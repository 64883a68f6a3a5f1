"""The price feed on the real stack: file import (all or nothing, idempotent), HTTP polling of a
local http.server, messages on trace.prices, and a PriceBook loaded from hot.prices."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from operators.price_feed.feed import import_file, poll
from operators.price_feed.parse import PriceFeedError
from operators.price_feed.sink import PricePublisher
from streams.enrich.prices import PriceBook
from tracekit.avro.wire import AvroCodec


def token() -> str:
    return "0x" + secrets.token_hex(20)


def rows(pg_url: str, tok: str) -> list[tuple[int, Decimal, str | None, str]]:
    with psycopg.connect(pg_url) as conn:
        found = conn.execute(
            "SELECT ts, usd, symbol, source FROM hot.prices WHERE token = %s ORDER BY ts", (tok,)
        ).fetchall()
    return [(int(ts), Decimal(usd), sym, str(src)) for ts, usd, sym, src in found]


def test_file_import_is_idempotent_and_all_or_nothing(pg_url: str, tmp_path: Path) -> None:
    tok = token()
    path = tmp_path / "prices.csv"
    path.write_text(f"token,timestamp,usd\n{tok},100,1.5\n{tok},1970-01-01T00:03:20Z,2.25\n")
    first = import_file(path, database_url=pg_url)
    assert (first.points, first.changed, first.published) == (2, 2, 0)
    again = import_file(path, database_url=pg_url)
    assert (again.points, again.changed) == (2, 0)
    assert rows(pg_url, tok) == [
        (100, Decimal("1.5"), None, "file:prices.csv"),
        (200, Decimal("2.25"), None, "file:prices.csv"),
    ]

    other = token()
    bad = tmp_path / "bad.csv"
    bad.write_text(f"token,timestamp,usd\n{other},100,1\n{tok},300,1\n{other},200,oops\n")
    with pytest.raises(PriceFeedError, match=r"bad\.csv:4: field 'usd'"):
        import_file(bad, database_url=pg_url)
    assert rows(pg_url, other) == []
    assert len(rows(pg_url, tok)) == 2


async def test_price_book_loads_from_postgres(pg_url: str, tmp_path: Path) -> None:
    tok = token()
    path = tmp_path / "prices.jsonl"
    path.write_text(
        "".join(
            json.dumps({"token": tok, "timestamp": ts, "usd": usd}) + "\n"
            for ts, usd in [(10, "1"), (20, "2")]
        )
    )
    import_file(path, database_url=pg_url)
    book = await PriceBook.load(pg_url)
    assert (book.usd_at(tok, 9), book.usd_at(tok, 15), book.usd_at(tok, 25)) == (None, Decimal(1), Decimal(2))


class Feed:
    """A local HTTP price endpoint whose body the test changes; counts requests."""

    def __init__(self) -> None:
        self.body = b"[]"
        self.status = 200
        self.requests = 0
        feed = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                feed.requests += 1
                self.send_response(feed.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(feed.body)))
                self.end_headers()
                self.wfile.write(feed.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/prices"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def feed() -> Iterator[Feed]:
    f = Feed()
    try:
        yield f
    finally:
        f.close()


def wait(what: str, check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_http_polling_with_kafka(pg_url: str, kafka_bootstrap: str, feed: Feed) -> None:
    tok = token()
    publisher = PricePublisher(kafka_bootstrap, topic=f"trace.prices.test-{secrets.token_hex(4)}")
    publisher.ensure_topic()
    feed.body = json.dumps([{"symbol": "TRC", "timestamp": 1000, "usd": "3.5"}]).encode()
    stop = threading.Event()
    runner = threading.Thread(
        target=poll,
        args=(feed.url,),
        kwargs={
            "interval": 0.1,
            "database_url": pg_url,
            "publisher": publisher,
            "symbols": {"TRC": tok},
            "stop": stop,
        },
        daemon=True,
    )
    runner.start()
    try:
        wait("the first poll stored", lambda: rows(pg_url, tok) == [(1000, Decimal("3.5"), "TRC", feed.url)])
        # a bad response is skipped whole, polling goes on
        feed.body = json.dumps(
            [{"token": tok, "timestamp": 1001, "usd": "4"}, {"token": tok, "timestamp": 1002}]
        ).encode()
        seen = feed.requests
        wait("two more polls", lambda: feed.requests >= seen + 2)
        assert [r[0] for r in rows(pg_url, tok)] == [1000]
        feed.status = 503
        seen = feed.requests
        wait("polls through an HTTP error", lambda: feed.requests >= seen + 2)
        feed.status = 200
        feed.body = json.dumps([{"token": tok, "timestamp": 1001, "usd": "4"}]).encode()
        wait("the next good poll stored", lambda: [r[0] for r in rows(pg_url, tok)] == [1000, 1001])
    finally:
        stop.set()
        runner.join(timeout=10)
    assert not runner.is_alive()

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"t-{secrets.token_hex(4)}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition(publisher.topic, 0, OFFSET_BEGINNING)])
    values: set[bytes] = set()
    deadline = time.monotonic() + 30
    try:
        while len(values) < 2 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                values.add(msg.value())
    finally:
        consumer.close()
    decoded = sorted((AvroCodec().decode(v)[1] for v in values), key=lambda m: m["ts"])
    assert decoded[:2] == [
        {"token": tok, "symbol": "TRC", "ts": 1000, "usd": "3.5", "source": feed.url},
        {"token": tok, "symbol": None, "ts": 1001, "usd": "4", "source": feed.url},
    ]


def test_cli_import_and_list(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from operators.price_feed.cli import app
    from tracekit.errors import TraceError

    monkeypatch.setenv("TRACE_DATABASE_URL", pg_url)
    tok = token()
    path = tmp_path / "p.csv"
    path.write_text("symbol,timestamp,usd\nTRC,100,1.5\n")
    runner = CliRunner()
    result = runner.invoke(app, ["import", str(path), "--symbol", f"TRC={tok}", "--no-publish"])
    assert result.exit_code == 0, result.output
    assert "1 price point(s): 1 changed, 0 published" in result.output
    result = runner.invoke(app, ["list", "--token", tok])
    assert result.exit_code == 0 and "1.5" in result.output
    result = runner.invoke(app, ["import", str(path), "--no-publish"])
    assert isinstance(result.exception, TraceError)
    assert str(result.exception).startswith(f"{path}:2: field 'symbol': unknown symbol 'TRC'")
