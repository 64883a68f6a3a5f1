"""``trace up | down | status``. Options override ``Settings`` (each also reads its ``TRACE_*`` var).

The commands raise :class:`TraceError` for anything a user can fix; the entry point (``main`` here,
``tracecli.main`` when mounted there) prints it as one line, ``error: ...``, and exits 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from devstack import stack
from devstack.status import collect_status
from tracekit.config import Settings, load_settings
from tracekit.errors import TraceError

app = typer.Typer(help="The local stack: Postgres, broker, anvil, S3 and Trace's services.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)


def _opt(field: str, *flags: str) -> Any:
    """An option for a Settings field: its description as help, its env var shown."""
    return typer.Option(*flags, envvar=f"TRACE_{field.upper()}", show_envvar=True,
                        help=Settings.model_fields[field].description)


def _settings(**overrides: Any) -> Settings:
    return load_settings(**overrides)


HomeOpt = Annotated[Path | None, _opt("home", "--home")]


@app.command()
def up(
    home: HomeOpt = None,
    host: Annotated[str | None, _opt("host", "--host")] = None,
    chain_id: Annotated[int | None, _opt("chain_id", "--chain-id")] = None,
    block_time: Annotated[float | None, _opt("block_time", "--block-time")] = None,
    pg_port: Annotated[int | None, _opt("pg_port", "--pg-port")] = None,
    kafka_port: Annotated[int | None, _opt("kafka_port", "--kafka-port")] = None,
    anvil_port: Annotated[int | None, _opt("anvil_port", "--anvil-port")] = None,
    s3_port: Annotated[int | None, _opt("s3_port", "--s3-port")] = None,
    database_url: Annotated[str | None, _opt("database_url", "--database-url")] = None,
    kafka_bootstrap: Annotated[str | None, _opt("kafka_bootstrap", "--kafka-bootstrap")] = None,
    rpc_url: Annotated[str | None, _opt("rpc_url", "--rpc-url")] = None,
    ws_url: Annotated[str | None, _opt("ws_url", "--ws-url")] = None,
    s3_endpoint: Annotated[str | None, _opt("s3_endpoint", "--s3-endpoint")] = None,
    object_store: Annotated[str | None, _opt("object_store", "--object-store")] = None,
    traffic: Annotated[bool | None, _opt("traffic", "--traffic/--no-traffic")] = None,
    tx_per_block: Annotated[int | None, _opt("traffic_tx_per_block", "--tx-per-block")] = None,
    reorg_every: Annotated[float | None, _opt("reorg_every", "--reorg-every")] = None,
    reorg_min_depth: Annotated[int | None, _opt("reorg_min_depth", "--reorg-min-depth")] = None,
    reorg_max_depth: Annotated[int | None, _opt("reorg_max_depth", "--reorg-max-depth")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the services")] = 60.0,
) -> None:
    """Start the local stack (what is not running yet) and return once everything is healthy."""
    settings = _settings(
        home=home, host=host, chain_id=chain_id, block_time=block_time, pg_port=pg_port,
        kafka_port=kafka_port, anvil_port=anvil_port, s3_port=s3_port, database_url=database_url,
        kafka_bootstrap=kafka_bootstrap, rpc_url=rpc_url, ws_url=ws_url, s3_endpoint=s3_endpoint,
        object_store=object_store, traffic=traffic,
        traffic_tx_per_block=tx_per_block, reorg_every=reorg_every, reorg_min_depth=reorg_min_depth,
        reorg_max_depth=reorg_max_depth,
    )
    report = stack.up(settings, timeout=timeout)
    parts = [f"{label} {', '.join(names)}" for label, names in
             (("started", report.started), ("already running", report.reused), ("external", report.external))
             if names]
    typer.echo(f"trace stack up in {report.seconds:.1f}s ({'; '.join(parts)}); "
               f"home {settings.home.resolve()}; objects {settings.resolved_object_store}")


@app.command()
def down(
    home: HomeOpt = None,
    purge: Annotated[bool, typer.Option("--purge", help="Also delete the home: data, logs, state")] = False,
) -> None:
    """Stop every process `up` started in this home (by pid file); data is kept unless --purge."""
    settings = _settings(home=home)
    stopped = stack.down(settings.home, purge=purge)
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    if purge:
        typer.echo(f"deleted the data, logs and state in {settings.home.resolve()}")


@app.command()
def status(
    home: HomeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
) -> None:
    """Health of each service and, per chain, head, cursor, lag, reorgs and hot-table rows."""
    settings = _settings(home=home)
    document = collect_status(settings)
    if as_json:
        typer.echo(json.dumps(document))
        return
    _print_status(document)


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def _print_status(document: dict[str, Any]) -> None:
    console = Console()
    services = Table("service", "healthy", "pid", "restarts", title="services")
    services.add_column("url", overflow="fold")
    for name, entry in document["services"].items():
        healthy = {True: "[green]yes[/]", False: "[red]no[/]", None: "?"}[entry["healthy"]]
        services.add_row(name, healthy, _cell(entry["pid"]), str(entry["restarts"]), _cell(entry["url"]))
    console.print(services)
    per_chain = list(document["chains"].items())
    chain_ids = [chain_id for chain_id, _ in per_chain]
    chains = Table("", *(f"chain {chain_id}" for chain_id in chain_ids), title="chains")
    for key in ("head", "cursor", "lag_blocks", "lag_seconds", "reorgs", "max_reorg_depth"):
        chains.add_row(key.replace("_", " "), *(_cell(entry[key]) for _, entry in per_chain))
    for table in ("blocks", "transactions", "logs"):
        chains.add_row(f"hot.{table} rows", *(_cell(entry["hot_rows"][table]) for _, entry in per_chain))
    console.print(chains)

def main() -> None:
    """Run :data:`app` alone (``python -m devstack.cli``): errors as one line, exit 1."""
    try:
        app()  # standalone: usage errors and exit codes are handled (and exited) by click
    except TraceError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)

if __name__ == "__main__":
    main()
