"""``trace alerts-route ...``: run the alert delivery job, list deliveries."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from operators.alert_route.config import load_routes
from operators.alert_route.service import RouteJob
from operators.alert_route.service import run as run_job
from operators.alert_route.store import deliveries as fetch
from tracekit.config import load_settings
from tracekit.db import connect
from tracekit.kafka import ensure_topics
from tracekit.logs import setup_logging
from tracekit.names import ALERTS_TOPIC

app = typer.Typer(
    help="Alert delivery: trace.alerts -> webhooks and e-mail.", no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.command("run")
def run(
    routes: Annotated[
        Path, typer.Option("--routes", envvar="TRACE_ALERT_ROUTES", help="Routes YAML file")
    ],
    topic: Annotated[str, typer.Option(envvar="TRACE_ALERTS_TOPIC", help="Alert topic")] = ALERTS_TOPIC,
    group: Annotated[str, typer.Option(help="Kafka consumer group")] = "trace-alert-route",
    senders: Annotated[int, typer.Option(min=1, help="Sender threads")] = 2,
    poll_interval: Annotated[float, typer.Option(help="Seconds between polls when nothing is due")] = 0.2,
    session_timeout_ms: Annotated[int, typer.Option(help="Kafka consumer session timeout")] = 10000,
    metrics_port: Annotated[
        int | None, typer.Option(envvar="TRACE_ALERT_ROUTE_METRICS_PORT", help="Prometheus port")
    ] = None,
) -> None:
    """Consume alerts into state.alert_deliveries and deliver them, until SIGTERM/SIGINT.

    Env: TRACE_ALERT_ROUTES, TRACE_DATABASE_URL, TRACE_KAFKA_BOOTSTRAP, TRACE_ALERTS_TOPIC,
    TRACE_ALERT_ROUTE_METRICS_PORT, and each webhook route's `secret_env`.
    """
    config, secrets = load_routes(routes)
    settings = load_settings()
    setup_logging()
    job = RouteJob(config, secrets, settings.resolved_database_url, settings.resolved_kafka_bootstrap,
                   topic=topic, group=group, senders=senders, poll_interval_s=poll_interval,
                   session_timeout_ms=session_timeout_ms)
    ensure_topics(job.kafka_bootstrap, {topic: 1})
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=settings.host)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    run_job(job, stop)


@app.command("deliveries")
def deliveries(
    status: Annotated[
        str | None, typer.Option(help="Only this status: pending, delivered or dead")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Rows shown, newest first")] = 50,
) -> None:
    """List recent alert deliveries. Env: TRACE_DATABASE_URL."""
    from rich.console import Console
    from rich.table import Table

    if status is not None and status not in ("pending", "delivered", "dead"):
        raise typer.BadParameter("one of pending, delivered, dead", param_hint="--status")
    with connect(load_settings().resolved_database_url, autocommit=True) as conn:
        rows = fetch(conn, status, limit)
    table = Table(title=f"alert deliveries{f' ({status})' if status else ''}")
    for column in ("delivery", "alert", "kind", "route", "channel", "status", "attempts", "next / delivered",
                   "last error"):
        table.add_column(column, overflow="fold")
    for row in rows:
        when = row["delivered_at"] if row["status"] == "delivered" else row["next_attempt_at"]
        table.add_row(row["delivery_id"][:12], row["alert_id"][:12], row["kind"], row["route"],
                      row["channel"], row["status"], str(row["attempts"]),
                      when.isoformat(timespec="seconds") if when else "", row["last_error"] or "")
    Console().print(table)

