"""``trace enrich run``: the enrichment worker (typed transfer and stake-change topics);
``trace labels``: the address labels it enriches with (``state.address_labels``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streams.config import AlertsConfig
from streams.enrich.labels import LabelStore
from tracekit.config import load_settings
from tracekit.errors import TraceError
from tracekit.kafka import ensure_topics
from tracekit.names import dead_letter_topic, stake_changes_topic, transfers_topic

app = typer.Typer(help="The enrichment worker: typed transfer and stake-change topics.",
                  no_args_is_help=True)


@app.command("run")
def run_enrichment() -> None:
    """Publish the chain's enriched Transfer/StakeChange records on their own topics.

    Env: TRACE_KAFKA_BOOTSTRAP, TRACE_DATABASE_URL, TRACE_CHAIN_ID, TRACE_ENRICH_WEB_PORT,
    TRACE_STAKING_CONTRACTS, TRACE_TOKEN_DECIMALS.
    """
    import faust

    from streams.enrich.agent import make_app

    settings = load_settings()
    config = AlertsConfig.from_settings(settings).model_copy(update={"web_port": settings.enrich_web_port,
                                                  "data_dir": settings.home / "faust-enrich"})
    ensure_topics(config.kafka_bootstrap, {config.topic: 1, dead_letter_topic(config.topic): 1,
                                           transfers_topic(config.chain_id): 1,
                                           stake_changes_topic(config.chain_id): 1})
    faust.Worker(make_app(config), loglevel="INFO", redirect_stdouts=False).execute_from_commandline()


labels_app = typer.Typer(help="Address labels used to enrich events. Env: TRACE_DATABASE_URL.",
                         no_args_is_help=True)

Org = Annotated[str, typer.Option("--org", help="Organisation the labels belong to")]


def _store(org: str) -> LabelStore:
    return LabelStore(load_settings().resolved_database_url, org_id=org)


@labels_app.command("add")
def add(address: str, label: str, org: Org = "default",
        source: Annotated[str, typer.Option(help="Where the label comes from")] = "cli") -> None:
    """Label ADDRESS with LABEL."""
    new = _store(org).add(address, label, source=source)
    typer.echo("added" if new else "already labelled")


@labels_app.command("remove")
def remove(address: str, label: str, org: Org = "default") -> None:
    """Remove LABEL from ADDRESS."""
    if not _store(org).remove(address, label):
        raise TraceError(f"{address.lower()} has no label {label!r}")
    typer.echo("removed")


@labels_app.command("list")
def list_(
    address: Annotated[str | None, typer.Option(help="Only this address")] = None,
    org: Org = "default",
) -> None:
    """The org's labels as a table."""
    from rich.console import Console
    from rich.table import Table

    labels = _store(org).list(address)
    table = Table("address", "label", "source", "created_at", title=f"labels of {org}")
    for item in labels:
        table.add_row(item.address, item.label, item.source, item.created_at.isoformat(timespec="seconds"))
    Console().print(table)


@labels_app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="CSV with columns address,label[,source]")],
    org: Org = "default",
    source: Annotated[str, typer.Option(help="Source of rows without one")] = "csv",
) -> None:
    """Import labels from a CSV file: all rows, or none if any row is bad."""
    added = _store(org).import_csv(file, source=source)
    typer.echo(f"imported {added} new label(s)")
