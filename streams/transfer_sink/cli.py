"""``trace transfer-sink run``: the Faust worker keeping hot.transfers and hot.stake_changes equal
to the canonical chain."""

from __future__ import annotations

import typer

from streams.config import SinkConfig
from tracekit.config import load_settings
from tracekit.kafka import ensure_topics
from tracekit.names import dead_letter_topic, stake_changes_topic, transfers_topic

app = typer.Typer(help="The Faust transfer sink: hot.transfers and hot.stake_changes.", no_args_is_help=True)


@app.command("run")
def transfer_sink_run() -> None:
    """Run the Faust worker that keeps hot.transfers and hot.stake_changes equal to the canonical chain.

    Env: TRACE_KAFKA_BOOTSTRAP, TRACE_DATABASE_URL, TRACE_CHAIN_ID, TRACE_TRANSFER_SINK_WEB_PORT,
    TRACE_TRANSFER_SINK_METRICS_PORT.
    """
    import faust  # slow to import: only when the worker runs
    from prometheus_client import start_http_server

    from streams.transfer_sink.agent import make_app

    settings = load_settings()
    config = SinkConfig.from_settings(settings).model_copy(update={
        "web_port": settings.transfer_sink_web_port,
        "metrics_port": settings.transfer_sink_metrics_port,
        "data_dir": settings.home / "faust-transfer-sink",
    })
    topics = (transfers_topic(config.chain_id), stake_changes_topic(config.chain_id))
    # one partition each (a broker that auto-creates would choose its own count): chain order
    ensure_topics(config.kafka_bootstrap, {name: 1 for t in topics for name in (t, dead_letter_topic(t))})
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=config.web_host)
    faust.Worker(make_app(config), loglevel="INFO", redirect_stdouts=False).execute_from_commandline()
