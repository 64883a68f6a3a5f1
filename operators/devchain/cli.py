"""``trace devchain ...``: deploy the dev-chain contracts, generate traffic, inject reorgs (anvil).

Mounted by the main CLI as ``app.add_typer(devchain.cli.app, name="devchain")``. Bad input and an
unreachable node print one line, ``error: ...``, and exit non-zero (2 for bad options, 1 otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from operators.devchain.deploy import ContractsMissing, Deployment, deploy, load_deployment, save_deployment
from operators.devchain.traffic import (
    BlockObserved,
    ReorgInjected,
    TrafficMix,
    TrafficStats,
    inject_reorg,
    run_reorgs,
    run_traffic,
)
from tracekit.errors import RpcUnavailable, TraceError
from tracekit.jsonrpc import RpcClient

DEFAULT_RPC_URL = "http://127.0.0.1:18545"
REPORT_EVERY_BLOCKS = 25

app = typer.Typer(
    help="Dev chain (anvil): deploy TraceToken/TraceStaking, generate traffic, inject reorgs.",
    no_args_is_help=True,
)

RpcUrl = Annotated[
    str,
    typer.Option("--rpc-url", envvar="TRACE_RPC_URL", help="JSON-RPC endpoint of the dev chain (anvil)."),
]
StateFile = Annotated[
    Path | None,
    typer.Option(
        "--state-file",
        help="Deployment record (JSON: chain id, token and staking addresses, accounts). Reused when "
        "its contracts are on the chain, (re)written otherwise.",
    ),
]

T = TypeVar("T")


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _check_url(rpc_url: str) -> None:
    if not rpc_url.startswith(("http://", "https://")):
        _fail(f"--rpc-url must be an http(s) URL, got {rpc_url!r}", 2)


def _run(rpc_url: str, main: Callable[[RpcClient], Awaitable[T]]) -> T:
    """Run ``main`` with a client for ``rpc_url``; map errors to one line and an exit code."""

    async def wrapper() -> T:
        async with RpcClient(rpc_url, timeout=10.0) as rpc:
            return await main(rpc)

    try:
        return asyncio.run(wrapper())
    except RpcUnavailable:
        _fail(
            f"JSON-RPC endpoint {rpc_url} is unreachable (is anvil running? `trace up` starts one; "
            "or set --rpc-url / TRACE_RPC_URL)"
        )
    except TraceError as exc:
        _fail(str(exc))


async def _deploy(rpc: RpcClient, state_file: Path | None) -> Deployment:
    existing = load_deployment(state_file) if state_file is not None else None
    deployment = await deploy(rpc, existing=existing)
    verb = "reusing" if deployment is existing else "deployed"
    typer.echo(
        f"{verb} TraceToken at {deployment.token}, TraceStaking at {deployment.staking} "
        f"(chain {deployment.chain_id}, block {deployment.block_number}, {len(deployment.accounts)} accounts)"
    )
    if state_file is not None:
        save_deployment(state_file, deployment)
    return deployment


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


def _summary(stats: TrafficStats) -> str:
    return (
        f"{stats.blocks} blocks, {stats.mined} tx mined ({stats.tx_per_block:.1f}/block), "
        f"sent {stats.sent}, failed {stats.failed}, reverted {stats.reverted}, "
        f"reorgs seen {stats.reorgs}, resyncs {stats.resyncs}"
    )


@app.command("deploy")
def deploy_command(rpc_url: RpcUrl = DEFAULT_RPC_URL, state_file: StateFile = None) -> None:
    """Deploy the contracts and fund the traffic accounts (idempotent with --state-file)."""
    _check_url(rpc_url)
    deployment = _run(rpc_url, lambda rpc: _deploy(rpc, state_file))
    typer.echo(json.dumps(deployment.to_json(), indent=2))


@app.command()
def traffic(
    rpc_url: RpcUrl = DEFAULT_RPC_URL,
    tx_per_block: Annotated[int, typer.Option(help="Transactions sent per block.")] = 20,
    seed: Annotated[int | None, typer.Option(help="Seed of the traffic and reorg RNGs (default: random).")]
    = None,
    reorg_every: Annotated[float, typer.Option(help="Seconds between injected reorgs; 0 = none.")] = 0.0,
    reorg_min_depth: Annotated[int, typer.Option(help="Smallest injected reorg depth.")] = 1,
    reorg_max_depth: Annotated[int, typer.Option(help="Largest injected reorg depth.")] = 3,
    blocks: Annotated[int | None, typer.Option(help="Stop after N blocks (default: until SIGINT/SIGTERM).")]
    = None,
    state_file: StateFile = None,
) -> None:
    """Deploy (or reuse) the contracts, then send --tx-per-block transactions every block."""
    _check_url(rpc_url)
    if tx_per_block < 0:
        _fail(f"--tx-per-block must be >= 0, got {tx_per_block}", 2)
    if reorg_every < 0:
        _fail(f"--reorg-every must be >= 0 seconds, got {reorg_every}", 2)
    if reorg_every > 0 and not 1 <= reorg_min_depth <= reorg_max_depth:
        _fail(
            "reorg depths must satisfy 1 <= --reorg-min-depth <= --reorg-max-depth, "
            f"got {reorg_min_depth} and {reorg_max_depth}",
            2,
        )
    if blocks is not None and blocks < 1:
        _fail(f"--blocks must be >= 1, got {blocks}", 2)
    run_seed = seed if seed is not None else random.SystemRandom().randrange(1 << 32)
    mix = TrafficMix(tx_per_block=tx_per_block)

    async def main(rpc: RpcClient) -> TrafficStats:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        stats = TrafficStats()
        deployment = await _deploy(rpc, state_file)
        reorgs = "off"
        if reorg_every:
            reorgs = f"every ~{reorg_every:g}s, depth {reorg_min_depth}..{reorg_max_depth}"
        typer.echo(f"traffic: {tx_per_block} tx/block, seed {run_seed}, reorgs {reorgs}")

        def on_block(block: BlockObserved) -> None:
            if blocks is not None and stats.blocks >= blocks:
                stop.set()
            if stats.blocks % REPORT_EVERY_BLOCKS == 0:
                typer.echo(f"block {block.number}: {block.tx_count} tx; total {_summary(stats)}")

        def on_reorg(result: ReorgInjected) -> None:
            typer.echo(f"injected reorg of depth {result.depth} at head {result.head}")

        async def traffic_forever() -> None:
            nonlocal deployment
            while not stop.is_set():
                try:
                    await run_traffic(
                        rpc, deployment, mix, stop, seed=run_seed, on_block=on_block, stats=stats
                    )
                except ContractsMissing as exc:
                    typer.echo(f"{exc}: redeploying", err=True)
                    deployment = await deploy(rpc)
                    if state_file is not None:
                        save_deployment(state_file, deployment)
            stop.set()

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(traffic_forever())
            if reorg_every > 0:
                tasks.create_task(run_reorgs(
                    rpc, stop, every_seconds=reorg_every, min_depth=reorg_min_depth,
                    max_depth=reorg_max_depth, seed=run_seed + 1,
                    protect_through=deployment.block_number, on_reorg=on_reorg,
                ))
        return stats

    stats = _run(rpc_url, _unwrap_group(main))
    typer.echo(f"done: {_summary(stats)}")


def _unwrap_group(
    main: Callable[[RpcClient], Coroutine[Any, Any, T]],
) -> Callable[[RpcClient], Coroutine[Any, Any, T]]:
    """Re-raise the first TraceError out of a TaskGroup's ExceptionGroup, so it prints as one line."""

    async def wrapped(rpc: RpcClient) -> T:
        try:
            return await main(rpc)
        except* TraceError as group:
            raise group.exceptions[0] from None

    return wrapped


@app.command()
def reorg(
    depth: Annotated[int, typer.Option(help="How many blocks to replace (>= 1).")],
    rpc_url: RpcUrl = DEFAULT_RPC_URL,
) -> None:
    """Replace the last --depth blocks with anvil_reorg (the head number stays)."""
    _check_url(rpc_url)
    if depth < 1:
        _fail(f"--depth must be >= 1, got {depth}", 2)
    result = _run(rpc_url, lambda rpc: inject_reorg(rpc, depth))
    typer.echo(f"reorged {result.depth} block(s) at head {result.head}")
    for block in result.replaced:
        typer.echo(f"  {block.number}: {block.old_hash} -> {block.new_hash}")


def main() -> None:  # pragma: no cover - `python -m operators.devchain.cli`
    app(prog_name="trace devchain")


if __name__ == "__main__":  # pragma: no cover
    main()
