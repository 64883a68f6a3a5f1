"""``trace db migrate``: the kernel's own command, the numbered SQL migrations."""

from __future__ import annotations

import typer

from tracekit.config import load_settings
from tracekit.db import migrate

app = typer.Typer(help="The Postgres state and hot-data schema.", no_args_is_help=True)


@app.command("migrate")
def db_migrate() -> None:
    """Apply the numbered SQL migrations not applied yet (idempotent). Env: TRACE_DATABASE_URL."""
    applied = migrate(load_settings().resolved_database_url)
    typer.echo(f"applied {len(applied)} migration(s)")
    for migration in applied:
        typer.echo(f"  {migration.version:04d} {migration.name}")
