"""``trace prices``: the price_feed operator (files, HTTP polling) and ``hot.prices``.

Env: TRACE_DATABASE_URL, TRACE_KAFKA_BOOTSTRAP.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from operators.price_feed.feed import poll as run_poll
from operators.price_feed.feed import store
from operators.price_feed.parse import parse_file, parse_symbols
from operators.price_feed.sink import PricePublisher, list_prices
from tracekit.config import Settings, load_settings
from tracekit.db import connect
from tracekit.logs import setup_logging

app = typer.Typer(help="Token USD prices (hot.prices, topic trace.prices).", no_args_is_help=True)

Symbols = Annotated[
    list[str] | None,
    typer.Option("--symbol", help="SYMBOL=0xADDRESS, for rows that name a symbol (repeatable)"),
]
Publish = Annotated[bool, typer.Option("--publish/--no-publish", help="Also publish onto trace.prices")]
Source = Annotated[str | None, typer.Option(help="Source of rows without one (default: file or URL)")]


def _settings() -> Settings:
    return load_settings()


def _publisher(settings: Settings, publish: bool) -> PricePublisher | None:
    if not publish:
        return None
    publisher = PricePublisher(settings.resolved_kafka_bootstrap)
    publisher.ensure_topic()
    return publisher


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help=".csv, .json (list) or .jsonl: token|symbol,timestamp,usd")],
    symbol: Symbols = None,
    source: Source = None,
    publish: Publish = True,
) -> None:
    """Import a price file: every row, or nothing if any row is bad."""
    points = parse_file(file, symbols=parse_symbols(symbol or []), source=source)  # before Kafka
    settings = _settings()
    result = store(points, database_url=settings.resolved_database_url,
                   publisher=_publisher(settings, publish))
    typer.echo(f"{result.points} price point(s): {result.changed} changed, {result.published} published")


@app.command("poll")
def poll(
    url: Annotated[str, typer.Argument(help="HTTP(S) endpoint serving a JSON list of prices")],
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between polls")] = 60.0,
    symbol: Symbols = None,
    source: Source = None,
    publish: Publish = True,
) -> None:
    """Poll URL every --interval seconds until SIGTERM/SIGINT; bad responses are logged and skipped."""
    setup_logging()
    symbols = parse_symbols(symbol or [])
    settings = _settings()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run_poll(url, interval=interval, database_url=settings.resolved_database_url,
             publisher=_publisher(settings, publish), symbols=symbols, source=source, stop=stop)


@app.command("list")
def list_(
    token: Annotated[str | None, typer.Option(help="Only this token address")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Rows to show, newest first")] = 50,
) -> None:
    """The newest rows of hot.prices."""
    from datetime import UTC, datetime

    from rich.console import Console
    from rich.table import Table


    with connect(_settings().resolved_database_url) as conn:
        rows = list_prices(conn, token=token, limit=limit)
    table = Table("token", "symbol", "time (UTC)", "ts", "usd", "source", title="hot.prices")
    for tok, sym, ts, usd, src in rows:
        when = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(tok, sym or "", when, str(ts), str(usd), src)
    Console().print(table)
