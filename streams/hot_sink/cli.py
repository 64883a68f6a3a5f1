"""``trace sink run``: the Faust worker keeping the hot tables equal to the canonical chain."""

from __future__ import annotations

import typer

from streams.config import SinkConfig
from tracekit.config import load_settings
from tracekit.kafka import ensure_topics
from tracekit.names import dead_letter_topic

app = typer.Typer(help="The Faust hot-table sink.", no_args_is_help=True)


@app.command("run")
def sink_run() -> None:
    """Run the Faust worker that keeps the hot tables equal to the canonical chain.

    Env: TRACE_KAFKA_BOOTSTRAP, TRACE_DATABASE_URL, TRACE_CHAIN_ID, TRACE_SINK_WEB_PORT,
    TRACE_SINK_METRICS_PORT.
    """
    import faust  # slow to import: only when the worker runs
    from prometheus_client import start_http_server

    from streams.hot_sink.agent import make_app

    config = SinkConfig.from_settings(load_settings())
    ensure_topics(config.kafka_bootstrap, {config.topic: 1, dead_letter_topic(config.topic): 1})
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=config.web_host)
    faust_app = make_app(config)
    faust.Worker(faust_app, loglevel="INFO", redirect_stdouts=False).execute_from_commandline()
