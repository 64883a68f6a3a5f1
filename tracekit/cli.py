"""``trace``: one entry point, a subcommand group per component.

Only this module reads the environment (``TRACE_*``, see ``trace <cmd> --help``); everything
below it takes explicit config. Errors a user can fix print as one line, ``error: ...``, with a
non-zero exit.
"""

from __future__ import annotations

import warnings

# faust/mode ask platformdirs for a runtime dir; on a server without XDG_RUNTIME_DIR that is noise
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")

import asyncio
import logging
import sys
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from dispatcher.cli import backfill_app, dispatcher_app, event_app, worker_app
from dispatcher.dag.cli import app as dag_app
from operators.devchain.cli import app as devchain_app
from tracekit.alerts_cli import app as alerts_app
from tracekit.alerts_cli import enrich_app
from tracekit.alerts_route_cli import app as alerts_route_app
from tracekit.config import Settings
from tracekit.errors import TraceError
from tracekit.labels_cli import app as labels_app
from tracekit.localstack.cli import down as stack_down
from tracekit.localstack.cli import status as stack_status
from tracekit.localstack.cli import up as stack_up
from tracekit.prices_cli import app as prices_app

app = typer.Typer(
    name="trace",
    help="Trace: follow an EVM chain through reorgs into Kafka and Postgres.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="The Postgres state and hot-data schema.", no_args_is_help=True)
follower_app = typer.Typer(help="The block_follower source operator.", no_args_is_help=True)
sink_app = typer.Typer(help="The Faust hot-table sink.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(follower_app, name="follower")
app.add_typer(sink_app, name="sink")
app.add_typer(devchain_app, name="devchain")
app.add_typer(alerts_app, name="alerts")
app.add_typer(enrich_app, name="enrich")
app.add_typer(alerts_route_app, name="alerts-route")
app.add_typer(labels_app, name="labels")
app.add_typer(prices_app, name="prices")
app.add_typer(dag_app, name="dag")
app.command()(stack_up)
app.command()(stack_down)
app.command()(stack_status)


def settings(**overrides: Any) -> Settings:
    """Settings from TRACE_* env vars, with CLI options (those not None) taking precedence."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise TraceError(f"invalid setting TRACE_{field.upper()}: {first['msg']}") from exc


def _logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply the numbered SQL migrations not applied yet (idempotent). Env: TRACE_DATABASE_URL."""
    from tracekit.db import migrate

    applied = migrate(settings().resolved_database_url)
    typer.echo(f"applied {len(applied)} migration(s)")
    for migration in applied:
        typer.echo(f"  {migration.version:04d} {migration.name}")


@follower_app.command("run")
def follower_run(
    from_block: Annotated[
        int | None,
        typer.Option(help="First block without a cursor (default: TRACE_START_BLOCK, else the head)"),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Blocks per JSON-RPC batch while catching up")] = 50,
) -> None:
    """Follow the chain head: Avro block/reorg events onto the chain's topic, cursor in Postgres.

    Env: TRACE_RPC_URL, TRACE_WS_URL, TRACE_KAFKA_BOOTSTRAP, TRACE_DATABASE_URL, TRACE_CHAIN_ID,
    TRACE_SCHEMA_REGISTRY_URL, TRACE_FOLLOWER_METRICS_PORT.
    """
    from operators.block_follower.follower import run_follower

    _logging()
    config = settings(start_block=from_block).follower().model_copy(update={"batch_size": batch_size})
    asyncio.run(run_follower(config))


@sink_app.command("run")
def sink_run() -> None:
    """Run the Faust worker that keeps the hot tables equal to the canonical chain.

    Env: TRACE_KAFKA_BOOTSTRAP, TRACE_DATABASE_URL, TRACE_CHAIN_ID, TRACE_SINK_WEB_PORT,
    TRACE_SINK_METRICS_PORT.
    """
    import faust
    from prometheus_client import start_http_server

    from streams.hot_sink.agent import make_app
    from tracekit.kafka import ensure_topics

    config = settings().sink()
    ensure_topics(config.kafka_bootstrap, {config.topic: 1, f"{config.topic}.dlq": 1})
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=config.web_host)
    faust_app = make_app(config)
    faust.Worker(faust_app, loglevel="INFO", redirect_stdouts=False).execute_from_commandline()


app.add_typer(dispatcher_app, name="dispatcher")
app.add_typer(dispatcher_app, name="api", help="Alias of `trace dispatcher` (the API is the dispatcher's).")
app.add_typer(worker_app, name="worker")
app.add_typer(backfill_app, name="backfill")
app.add_typer(event_app, name="event")


@app.command()
def demo(
    seconds: Annotated[float, typer.Option(help="How long to watch the running slice")] = 40.0,
    keep: Annotated[bool, typer.Option("--keep", help="Leave the stack running afterwards")] = False,
) -> None:
    """The realtime slice end to end: stack up, traffic with reorgs, follower, sink; then a report.

    Env: every TRACE_* setting of `trace up` (ports, home, external services).
    """
    from tracekit.demo import run_demo

    summary = run_demo(settings(traffic=True), seconds=seconds, keep=keep, say=typer.echo)
    if summary["mismatches"]:
        raise TraceError(f"hot tables differ from the node at heights {summary['mismatches'][:10]}")
    backfill = summary["backfill"]
    if backfill["state"] != "succeeded" or backfill["mismatches_vs_node"]:
        run_id = backfill["run_id"]
        raise TraceError(f"backfill {run_id} ended {backfill['state']}; blocks differing from the node:"
                         f" {backfill['mismatches_vs_node']} (see `trace backfill status {run_id}`)")
    if not summary["blocks_followed"]:
        raise TraceError("the follower did not advance; see the logs under the stack's home (logs/)")


def main() -> None:
    """Run the CLI; a :class:`TraceError` prints as one line, ``error: ...``, and exits 1."""
    try:
        app()  # standalone: click handles usage errors and exit codes itself
    except TraceError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
