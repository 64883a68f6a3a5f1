"""``trace alerts``: apply rule files, run the evaluator, tail alerts live, evaluate history."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from streams.alerts.history import run_history
from streams.alerts.rules import load_rule_files
from streams.alerts.store import apply_rule_set
from streams.alerts.subscribe import alert_stream
from streams.config import AlertsConfig
from tracekit.config import Settings, load_settings
from tracekit.errors import ConfigError
from tracekit.kafka import ensure_topics
from tracekit.names import dead_letter_topic
from tracekit.yamlfile import yaml_files

app = typer.Typer(help="Alert rules, live alerts and historical evaluation.", no_args_is_help=True)


def _settings() -> Settings:
    return load_settings()


def _row(alert: dict[str, Any], *, markup: bool = True) -> tuple[str, ...]:
    when = dt.datetime.fromtimestamp(alert["fired_at_ms"] / 1000, tz=dt.UTC).strftime("%H:%M:%S.%f")[:-3]
    kind = "RETRACTED" if alert["kind"] == "RETRACTION" else "ALERT"
    if markup:
        kind = f"[red]{kind}[/red]" if kind == "RETRACTED" else f"[green]{kind}[/green]"
    return (when, kind, alert["rule_id"], alert["tier"].lower(), alert["severity"],
            str(alert["block_number"]), alert["summary"], alert["alert_id"][:12])


@app.command()
def tail(
    rule: Annotated[str | None, typer.Option(help="Only this rule id")] = None,
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="Replay all alerts")] = False,
    limit: Annotated[int, typer.Option(help="Stop after this many (0 = run until Ctrl-C)")] = 0,
    plain: Annotated[bool, typer.Option("--plain", help="Lines, not a live table")] = False,
) -> None:
    """Print alerts and retractions live as they are published. Env: TRACE_KAFKA_BOOTSTRAP."""
    settings = _settings()
    columns = ("time (UTC)", "kind", "rule", "tier", "severity", "block", "summary", "alert id")

    async def run() -> None:
        seen = 0
        stream = alert_stream(settings.resolved_kafka_bootstrap, topic=settings.alerts_topic, rule=rule,
                              from_beginning=from_beginning)
        if plain:
            async for alert in stream:
                typer.echo("\t".join(_row(alert, markup=False)))
                seen += 1
                if limit and seen >= limit:
                    return
            return
        table = Table(*columns, title="trace alerts", expand=True)
        with Live(table, console=Console(), auto_refresh=False) as live:
            async for alert in stream:
                table.add_row(*_row(alert))
                live.refresh()
                seen += 1
                if limit and seen >= limit:
                    return

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


@app.command()
def apply(
    paths: Annotated[list[Path], typer.Argument(help="Rule files (YAML) or folders of them")],
    dry: Annotated[bool, typer.Option("--dry", help="Validate only; change nothing")] = False,
) -> None:
    """Validate the rule files and make them the active, versioned rule set.

    A bad file fails with FILE:LINE: reason and leaves the active rules unchanged.
    Env: TRACE_DATABASE_URL.
    """
    files = yaml_files(paths)
    if not files:
        raise ConfigError(f"no rule files (*.yaml, *.yml) in {', '.join(map(str, paths))}")
    rule_set = load_rule_files(files)
    if dry:
        typer.echo(f"{len(rule_set)} rule(s) valid in {len(files)} file(s); nothing applied (--dry)")
        return
    url = _settings().resolved_database_url

    async def run() -> tuple[int, bool]:
        import orjson
        import psycopg

        async with await psycopg.AsyncConnection.connect(url) as conn:
            return await apply_rule_set(conn, rule_set.digest, orjson.loads(rule_set.to_json()),
                                        [str(f) for f in files])

    version, created = asyncio.run(run())
    if created:
        typer.echo(f"applied {len(rule_set)} rule(s) from {len(files)} file(s) as version {version}")
    else:
        typer.echo(f"unchanged: version {version} already holds these {len(rule_set)} rule(s)")


@app.command("run")
def run_evaluator() -> None:
    """Run the Faust worker that evaluates the active rules on the chain's events.

    Env: TRACE_KAFKA_BOOTSTRAP, TRACE_DATABASE_URL, TRACE_CHAIN_ID, TRACE_FINALITY_DEPTH,
    TRACE_ALERTS_TOPIC, TRACE_ALERTS_WEB_PORT, TRACE_ALERTS_METRICS_PORT, TRACE_STAKING_CONTRACTS.
    """
    import faust
    from prometheus_client import start_http_server

    from streams.alerts.agent import make_app

    config = AlertsConfig.from_settings(_settings())
    ensure_topics(config.kafka_bootstrap, {config.topic: 1, dead_letter_topic(config.topic): 1,
                                           config.alerts_topic: 1})
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=config.web_host)
    faust.Worker(make_app(config), loglevel="INFO", redirect_stdouts=False).execute_from_commandline()


@app.command()
def history(
    from_block: Annotated[int, typer.Option("--from", help="First block of the range")],
    to_block: Annotated[int, typer.Option("--to", help="Last block of the range (inclusive)")],
    label: Annotated[str, typer.Option(help="A name for this run")] = "history",
) -> None:
    """Evaluate the active rules over a past range of the hot tables, as a labelled run.

    Results go to state.historical_alerts; a historical run never delivers anything.
    """
    settings = _settings()
    config = AlertsConfig.from_settings(settings)
    run = asyncio.run(run_history(
        settings.resolved_database_url, settings.chain_id, from_block, to_block, label,
        staking_contracts=config.staking_contracts, token_decimals=config.token_decimals,
    ))
    typer.echo(f"run {run.run_id} ({run.label}): {run.blocks} blocks, {run.alerts} alerts, "
               f"rule set version {run.rule_version}; nothing delivered")
