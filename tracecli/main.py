"""``trace``: one entry point; each component's command group, mounted here.

Each component owns its CLI (``<component>/cli.py``); this module only assembles them. Only the
CLI reads the environment (``TRACE_*``, see ``trace <cmd> --help``); everything
below it takes explicit config. Errors a user can fix print as one line, ``error: ...``, with a
non-zero exit.
"""

from __future__ import annotations

import warnings

# faust/mode ask platformdirs for a runtime dir; on a server without XDG_RUNTIME_DIR that is noise
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")

import sys
from typing import Annotated

import typer

from devstack.cli import down as stack_down
from devstack.cli import status as stack_status
from devstack.cli import up as stack_up
from dispatcher.cli import backfill_app, dispatcher_app, event_app, worker_app
from dispatcher.dag.cli import app as dag_app
from dispatcher.datasets.cli import app as datasets_app
from dispatcher.query.cli import app as query_app
from operators.alert_route.cli import app as alerts_route_app
from operators.block_follower.cli import app as follower_app
from operators.devchain.cli import app as devchain_app
from operators.price_feed.cli import app as prices_app
from streams.alerts.cli import app as alerts_app
from streams.enrich.cli import app as enrich_app
from streams.enrich.cli import labels_app
from streams.hot_sink.cli import app as sink_app
from streams.transfer_sink.cli import app as transfer_sink_app
from tracecli.demo import run_demo
from tracekit.config import load_settings
from tracekit.db.cli import app as db_app
from tracekit.errors import TraceError

app = typer.Typer(
    name="trace",
    help="Trace: follow an EVM chain through reorgs into Kafka and Postgres.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(stack_up)
app.command()(stack_down)
app.command()(stack_status)
app.add_typer(db_app, name="db")
app.add_typer(devchain_app, name="devchain")
app.add_typer(follower_app, name="follower")
app.add_typer(sink_app, name="sink")
app.add_typer(enrich_app, name="enrich")
app.add_typer(transfer_sink_app, name="transfer-sink")
app.add_typer(labels_app, name="labels")
app.add_typer(prices_app, name="prices")
app.add_typer(alerts_app, name="alerts")
app.add_typer(alerts_route_app, name="alerts-route")
app.add_typer(dispatcher_app, name="dispatcher")
app.add_typer(dispatcher_app, name="api", help="Alias of `trace dispatcher` (the API is the dispatcher's).")
app.add_typer(worker_app, name="worker")
app.add_typer(backfill_app, name="backfill")
app.add_typer(event_app, name="event")
app.add_typer(dag_app, name="dag")
app.add_typer(datasets_app, name="datasets")
app.add_typer(query_app, name="query")


@app.command()
def demo(
    seconds: Annotated[float, typer.Option(help="How long to watch the running slice")] = 40.0,
    keep: Annotated[bool, typer.Option("--keep", help="Leave the stack running afterwards")] = False,
) -> None:
    """The realtime slice end to end: stack up, traffic with reorgs, follower, sink; then a report.

    Env: every TRACE_* setting of `trace up` (ports, home, external services).
    """
    summary = run_demo(load_settings(traffic=True), seconds=seconds, keep=keep, say=typer.echo)
    if summary["mismatches"]:
        raise TraceError(f"hot tables differ from the node at heights {summary['mismatches'][:10]}")
    backfill = summary["backfill"]
    if backfill["state"] != "succeeded" or backfill["mismatches_vs_node"]:
        run_id = backfill["run_id"]
        raise TraceError(f"backfill {run_id} ended {backfill['state']}; blocks differing from the node:"
                         f" {backfill['mismatches_vs_node']} (see `trace backfill status {run_id}`)")
    if backfill["checksum_mismatches"]:
        raise TraceError("backfill files whose bytes differ from their reported sha256: "
                         f"{backfill['checksum_mismatches']}")
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
