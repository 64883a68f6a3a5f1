"""``trace follower run``: the block_follower source operator."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from operators.block_follower.config import FollowerConfig
from tracekit.config import load_settings
from tracekit.logs import setup_logging

app = typer.Typer(help="The block_follower source operator.", no_args_is_help=True)


@app.command("run")
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
    from operators.block_follower.follower import run_follower  # websockets, confluent-kafka: lazily

    setup_logging()
    config = FollowerConfig.from_settings(load_settings(start_block=from_block))
    asyncio.run(run_follower(config.model_copy(update={"batch_size": batch_size})))
