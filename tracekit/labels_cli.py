"""``trace labels``: address labels of an org (``state.address_labels``). Env: TRACE_DATABASE_URL."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError

from tracekit.config import Settings
from tracekit.errors import TraceError

if TYPE_CHECKING:
    from streams.enrich.labels import LabelStore

app = typer.Typer(help="Address labels used to enrich events.", no_args_is_help=True)

Org = Annotated[str, typer.Option("--org", help="Organisation the labels belong to")]


def database_url() -> str:
    """TRACE_DATABASE_URL (or the embedded Postgres), an invalid setting as one TraceError line."""
    try:
        return Settings().resolved_database_url
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise TraceError(f"invalid setting TRACE_{field.upper()}: {first['msg']}") from exc


def _store(org: str) -> LabelStore:  # lazy import keeps `trace --help` fast
    from streams.enrich.labels import LabelStore

    return LabelStore(database_url(), org_id=org)


@app.command("add")
def add(address: str, label: str, org: Org = "default",
        source: Annotated[str, typer.Option(help="Where the label comes from")] = "cli") -> None:
    """Label ADDRESS with LABEL."""
    new = _store(org).add(address, label, source=source)
    typer.echo("added" if new else "already labelled")


@app.command("remove")
def remove(address: str, label: str, org: Org = "default") -> None:
    """Remove LABEL from ADDRESS."""
    if not _store(org).remove(address, label):
        raise TraceError(f"{address.lower()} has no label {label!r}")
    typer.echo("removed")


@app.command("list")
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


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="CSV with columns address,label[,source]")],
    org: Org = "default",
    source: Annotated[str, typer.Option(help="Source of rows without one")] = "csv",
) -> None:
    """Import labels from a CSV file: all rows, or none if any row is bad."""
    added = _store(org).import_csv(file, source=source)
    typer.echo(f"imported {added} new label(s)")
