"""Backfill engines benchmark: blocks/s of the ``rpc`` and ``cryo`` engines of cryo_ingest over the
same range of the same anvil, in the same run.

It starts its own anvil (chain 10143, automine, quiet) on a free port with a history of
``--blocks`` blocks of ~``--tx-per-block`` dev-chain transactions each (ERC-20 transfers, mints,
burns, staking; logs on most). The history is built once with :func:`build_history` and cached
as an ``anvil_dumpState`` snapshot under ``.trace/bench-cache/`` (``--load-state`` restores it in
about a second); ``--rebuild`` ignores the cache. Then, alternating engines for ``--rounds``
rounds (the best round counts), over the whole history in chunks of ``--chunk-size`` blocks:

1. **extract**: the bare extractor, ``blocks`` + ``transactions`` + ``logs`` into Arrow tables in
   memory (rpc: async JSON-RPC batches; cryo: one ``cryo.async_collect`` per dataset);
2. **ingest**: ``ingest_chunk`` per chunk, Parquet files staged on disk (what a worker runs);
3. baseline: a bare batched JSON-RPC fetch (blocks with transactions + receipts, parsed with
   orjson, nothing else), the node's own limit.

    .venv/bin/python bench/backfill_engines.py [--blocks 2000] [--tx-per-block 8] [--chunk-size 1000]

``build_history`` and ``run_engine`` are meant to be imported by other benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from devstack.anvil import anvil_binary, rpc_chain_id
from devstack.process import free_port, spawn, stop_pid, wait_until
from operators.cryo_ingest import DEFAULT_DATASETS as DATASETS
from operators.cryo_ingest import Chunk, Dataset, IngestRequest, ingest_chunk
from operators.cryo_ingest.devhistory import History
from operators.cryo_ingest.devhistory import build_history as _build_history
from operators.cryo_ingest.engines import cryo as cryo_engine
from operators.cryo_ingest.engines import rpc as rpc_engine
from operators.cryo_ingest.ratelimit import RateLimitAwareClient, RetryingRpc
from operators.range_splitter import split_range
from tracekit.jsonrpc import RpcClient
from tracekit.objects_local import LocalObjectStore

ROOT = Path(__file__).resolve().parents[1]
CHAIN_ID = 10143
CACHE_DIR = ROOT / ".trace" / "bench-cache"


# -- the chain -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chain:
    """A running anvil with a history: ``rpc_url``, blocks ``first..last`` of traffic."""

    rpc_url: str
    first: int
    last: int
    transactions: int
    proc: subprocess.Popen[bytes]


async def build_history(rpc_url: str, *, blocks: int = 2000, tx_per_block: int = 8, seed: int = 1) -> History:
    """Mine ``blocks`` blocks of dev-chain traffic on the anvil at ``rpc_url`` (automine on, no
    ``--block-time``); see :mod:`operators.cryo_ingest.devhistory`."""
    async with RpcClient(rpc_url, timeout=120) as rpc:
        return await _build_history(rpc, blocks=blocks, tx_per_block=tx_per_block, seed=seed)


def _start_anvil(log: Path, state: Path | None) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    argv = [str(anvil_binary()), "--host", "127.0.0.1", "--port", str(port), "--chain-id", str(CHAIN_ID),
            "--accounts", "20", "--balance", "1000000", "--gas-limit", "300000000", "--quiet"]
    if state is not None:
        argv += ["--load-state", str(state)]
    proc = spawn(argv, log)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: rpc_chain_id(url) == CHAIN_ID, timeout=60, what="anvil", proc=proc, log_path=log)
    return url, proc


@contextmanager
def history_chain(
    root: Path, *, blocks: int = 2000, tx_per_block: int = 8, seed: int = 1, rebuild: bool = False
) -> Iterator[Chain]:
    """An anvil holding a history of ``blocks`` blocks, restored from the snapshot cache when there."""
    key = f"history-{blocks}b-{tx_per_block}tx-seed{seed}"
    snapshot, meta_path = CACHE_DIR / f"{key}.state", CACHE_DIR / f"{key}.json"
    cached = not rebuild and snapshot.exists() and meta_path.exists()
    url, proc = _start_anvil(root / "anvil.log", snapshot if cached else None)
    try:
        if cached:
            meta = json.loads(meta_path.read_text())
        else:
            started = time.perf_counter()
            history = asyncio.run(build_history(url, blocks=blocks, tx_per_block=tx_per_block, seed=seed))
            meta = {"first": history.first_block, "last": history.last_block,
                    "transactions": history.transactions, "build_s": round(time.perf_counter() - started, 1)}
            state = asyncio.run(_dump_state(url))  # hex of gzipped JSON; --load-state reads JSON
            CACHE_DIR.mkdir(parents=True, exist_ok=True)
            snapshot.write_bytes(gzip.decompress(bytes.fromhex(state.removeprefix("0x"))))
            meta_path.write_text(json.dumps(meta))
        yield Chain(url, meta["first"], meta["last"], meta["transactions"], proc)
    finally:
        stop_pid(proc.pid)
        proc.wait(10)


async def _dump_state(url: str) -> str:
    async with RpcClient(url, timeout=120) as rpc:
        state = await rpc.call("anvil_dumpState")
    if not isinstance(state, str):
        raise RuntimeError("anvil_dumpState did not return a string")
    return state


# -- the engines ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineRun:
    engine: str
    mode: str  # "extract" (tables in memory) or "ingest" (ingest_chunk, files staged)
    blocks: int
    seconds: float
    rows: dict[str, int]
    bytes: int
    cpu_s: float = 0.0  # this process's CPU time (all threads: cryo's Rust workers included)

    @property
    def blocks_per_s(self) -> float:
        return self.blocks / self.seconds


async def run_engine(
    engine: str,
    rpc_url: str,
    first: int,
    last: int,
    *,
    out_dir: Path | None = None,
    chunk_size: int = 1000,
    datasets: Sequence[Dataset] = DATASETS,
    concurrency: int = 4,
    batch_blocks: int = 50,
    chain_id: int = CHAIN_ID,
) -> EngineRun:
    """Run ``engine`` over blocks ``first..last`` in aligned chunks of ``chunk_size``, one chunk after
    the other. With ``out_dir`` each chunk goes through ``ingest_chunk`` (files staged there);
    without, only the engine's extractor runs (tables in memory)."""
    chunks = split_range(first, last, chunk_size)
    rows = dict.fromkeys(datasets, 0)
    size = 0
    started, cpu = time.perf_counter(), time.process_time()
    if out_dir is not None:
        store = LocalObjectStore(out_dir)
        for chunk in chunks:
            staged = await ingest_chunk(IngestRequest(
                rpc_url, chain_id, chunk, "", tuple(datasets), engine,  # type: ignore[arg-type]
                confirmed_head=last, batch_blocks=batch_blocks, concurrency=concurrency,
            ), store)
            for f in staged:
                rows[f.dataset] += f.rows
                size += f.bytes
    else:
        async with RateLimitAwareClient(rpc_url, max_connections=concurrency) as client:
            rpc = RetryingRpc(client)
            for chunk in chunks:
                if engine == "rpc":
                    tables = await rpc_engine.extract(rpc, chain_id, chunk, datasets,
                                                      batch_blocks=batch_blocks, concurrency=concurrency)
                else:
                    tables = await cryo_engine.extract(rpc_url, chunk, datasets, rpc=rpc,
                                                       concurrency=concurrency, batch_blocks=batch_blocks)
                for dataset, table in tables.items():
                    rows[dataset] += table.num_rows
                    size += table.nbytes
    seconds = time.perf_counter() - started
    return EngineRun(engine, "ingest" if out_dir else "extract", last - first + 1, seconds, rows, size,
                     time.process_time() - cpu)


async def bare_fetch(url: str, first: int, last: int, batch: int = 50, concurrency: int = 4) -> float:
    """Blocks/s of a bare batched fetch of [first, last]: blocks with txs + receipts, parsed."""
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(timeout=60, limits=limits, headers=headers) as http:

        async def one(part: Chunk) -> None:
            body = []
            for n in range(part.start, part.end + 1):
                body.append({"jsonrpc": "2.0", "id": 2 * n, "method": "eth_getBlockByNumber",
                             "params": [hex(n), True]})
                body.append({"jsonrpc": "2.0", "id": 2 * n + 1, "method": "eth_getBlockReceipts",
                             "params": [hex(n)]})
            async with gate:
                replies = orjson.loads((await http.post(url, content=orjson.dumps(body))).content)
            if not isinstance(replies, list) or any(r.get("result") is None for r in replies):
                raise RuntimeError(f"bare fetch failed: {str(replies)[:300]}")

        started = time.perf_counter()
        await asyncio.gather(*(one(p) for p in split_range(first, last, batch)))
        return (last - first + 1) / (time.perf_counter() - started)


# -- main ----------------------------------------------------------------------------------------


async def measure(chain: Chain, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    runs: dict[str, list[EngineRun]] = {}
    bare: list[float] = []
    for round_no in range(args.rounds):
        order = ["rpc", "cryo"] if round_no % 2 == 0 else ["cryo", "rpc"]
        bare.append(await bare_fetch(chain.rpc_url, chain.first, chain.last, concurrency=args.concurrency))
        for engine in order:
            for mode in ("extract", "ingest"):
                out = root / f"out-{engine}-{round_no}" if mode == "ingest" else None
                run = await run_engine(engine, chain.rpc_url, chain.first, chain.last, out_dir=out,
                                       chunk_size=args.chunk_size, concurrency=args.concurrency)
                runs.setdefault(f"{engine}_{mode}", []).append(run)
                print(json.dumps({"round": round_no, "engine": engine, "mode": mode,
                                  "blocks_per_s": round(run.blocks_per_s, 1),
                                  "cpu_ms_per_block": round(1000 * run.cpu_s / run.blocks, 3)}), flush=True)
                if out is not None:
                    shutil.rmtree(out)
    best = {name: max(rs, key=lambda r: r.blocks_per_s) for name, rs in runs.items()}
    result: dict[str, Any] = {
        "blocks": chain.last - chain.first + 1,
        "transactions": chain.transactions,
        "tx_per_block": round(chain.transactions / (chain.last - chain.first + 1), 2),
        "chunk_size": args.chunk_size,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "bare_rpc_fetch_blocks_per_s": round(max(bare), 1),
    }
    for name, run in best.items():
        result[f"{name}_blocks_per_s"] = round(run.blocks_per_s, 1)
        result[f"{name}_cpu_ms_per_block"] = round(1000 * min(r.cpu_s for r in runs[name]) / run.blocks, 3)
        result[f"{name}_rows"] = run.rows
    for mode in ("extract", "ingest"):
        result[f"{mode}_ratio_rpc_to_cryo"] = round(
            best[f"rpc_{mode}"].blocks_per_s / best[f"cryo_{mode}"].blocks_per_s, 2
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--blocks", type=int, default=2000)
    parser.add_argument("--tx-per-block", type=int, default=8)
    parser.add_argument("--chunk-size", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rebuild", action="store_true", help="ignore the cached history snapshot")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="trace-bench-backfill-"))
    os.environ.setdefault("XDG_RUNTIME_DIR", str(root))
    try:
        with history_chain(root, blocks=args.blocks, tx_per_block=args.tx_per_block, seed=args.seed,
                           rebuild=args.rebuild) as chain:
            result = asyncio.run(measure(chain, args, root))
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
