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

app = typer.Typer(help="Alert rules, live alerts and historical evaluation.", no_args_is_help=True)


def _settings() -> Any:
    from tracekit.cli import settings

    return settings()


def _row(alert: dict[str, Any]) -> tuple[str, ...]:
    when = dt.datetime.fromtimestamp(alert["fired_at_ms"] / 1000, tz=dt.UTC).strftime("%H:%M:%S.%f")[:-3]
    kind = "[red]RETRACTED[/red]" if alert["kind"] == "RETRACTION" else "[green]ALERT[/green]"
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
    from streams.alerts.subscribe import alert_stream

    bootstrap = _settings().resolved_kafka_bootstrap
    columns = ("time (UTC)", "kind", "rule", "tier", "severity", "block", "summary", "alert id")

    async def run() -> None:
        seen = 0
        table = Table(*columns, title="trace alerts", expand=True)
        with Live(table, console=Console(), auto_refresh=False, transient=plain) as live:
            async for alert in alert_stream(bootstrap, rule=rule, from_beginning=from_beginning):
                if plain:
                    typer.echo("\t".join(_row(alert)).replace("[green]", "").replace("[/green]", "")
                               .replace("[red]", "").replace("[/red]", ""))
                else:
                    table.add_row(*_row(alert))
                    live.refresh()
                seen += 1
                if limit and seen >= limit:
                    return

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


def rule_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
        else:
            files.append(path)
    return files
