"""``trace query "SQL"``: one SELECT over the views (blocks, transactions, logs, traces, transfers,
stake_changes, prices, labels, alerts and the org's derived datasets), hot and cold as one.

Runs in this process against Postgres and the warehouse (like ``trace datasets``). Env:
TRACE_DATABASE_URL, TRACE_OBJECT_STORE (and TRACE_S3_*), TRACE_CHAIN_ID, TRACE_ORG_ID.
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from dispatcher.query.engine import Limits, QueryEngine, QueryResult, engine_of
from dispatcher.query.output import FORMATS, Format, encode, text_rows
from tracekit.config import Settings, load_settings
from tracekit.errors import ConfigError


class _SqlFirst(TyperGroup):
    """``trace query SQL`` runs SQL; ``trace query <command>`` a command (none yet but ``sql``)."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            return super().resolve_command(ctx, ["sql", *args])
        return super().resolve_command(ctx, args)


app = typer.Typer(cls=_SqlFirst, no_args_is_help=True,
                  help='Ask SQL of recent and historical chain data as one: trace query "SELECT ..."')


def engine_from(settings: Settings, org: str | None = None, *, limits: Limits | None = None) -> QueryEngine:
    from dispatcher.cli import warehouse_of
    from tracekit.objects import parse_store_url

    url = settings.resolved_object_store
    s3 = settings.s3_config(create_secrets=False) if parse_store_url(url).bucket is not None else None
    return engine_of(settings.resolved_database_url, org or settings.org_id, settings.chain_id,
                     warehouse_of(url), s3, url, limits=limits)


@app.command("sql", hidden=True)
def sql_command(
    sql: Annotated[str, typer.Argument(help="One SELECT (or WITH ... SELECT) over the views")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, json, csv or parquet")] = "table",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file")] = None,
    at: Annotated[int | None, typer.Option("--at", min=1, help="An older pointer set (committed data only)")]
    = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many rows")] = 10_000,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds before it is interrupted")]
    = 60.0,
    org: Annotated[str | None, typer.Option("--org", help="The org (default TRACE_ORG_ID)")] = None,
) -> None:
    """Run SQL; the rows go to the terminal (a table) or, with --format, as JSON, CSV or Parquet."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt == "parquet" and output is None:
        raise ConfigError("--format parquet writes a file: add --output FILE")
    engine = engine_from(load_settings(), org, limits=Limits(rows=limit, timeout_s=timeout))
    try:
        result = engine.run(sql, at=at, actor=getpass.getuser(), door="cli")
    finally:
        engine.close()
    show(result, fmt, output)


def show(result: QueryResult, fmt: Format, output: Path | None) -> None:
    if fmt != "table":
        data = encode(result.table, fmt)
        if output is None:
            sys.stdout.buffer.write(data)
        else:
            output.write_bytes(data)
    else:
        table = Table(*result.table.column_names, title=None, show_lines=False)
        for row in text_rows(result.table):
            table.add_row(*row)
        if output is not None:
            with output.open("w") as sink:
                Console(file=sink, width=100_000).print(table)
        else:  # a terminal gets its width (long values folded); a pipe the whole values
            Console(width=None if sys.stdout.isatty() else 100_000).print(table)
    note = (f"{result.table.num_rows} row(s){' (truncated: --limit)' if result.truncated else ''} in "
            f"{result.seconds:.3f} s; pointer set {result.pointer_set}"
            + "".join(f", {d} v{v}" for d, v in sorted(result.versions.items())))
    Console(stderr=True).print(note, highlight=False)
