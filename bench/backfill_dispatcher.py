"""Backfill through the dispatcher: blocks/s of a whole backfill run (POST /v1/backfills -> split
task -> chunk tasks leased by a worker -> Parquet staged and committed -> run succeeded) beside
the bare engines on the same range of the same anvil, in the same run.

Per round (the best round counts), alternating the order:

1. **bare rpc extract**: the ``rpc`` engine's extractor alone, chunk after chunk, tables in memory
   (and **cryo extract**: cryo alone, the same way);
2. **bare rpc ingest**: ``ingest_chunk`` with the ``rpc`` engine, chunk after chunk, files on disk
   (exactly the work one worker task does, minus the dispatcher);
3. **cryo ingest**: the same with the ``cryo`` engine;
4. **dispatcher**: the real dispatcher (API, outbox publisher, reaper, Postgres wake-up queue)
   and one worker with ``--slots`` slots, in this process; the timer runs from the POST to the
   run's ``succeeded`` (polled every 10 ms in the database). The rows the run committed
   (``state.task_outputs``) must equal the bare ingest's, or the benchmark fails.

Target: dispatcher >= 0.9 x bare rpc extract. The chain is :func:`backfill_engines.history_chain`
(``--blocks`` blocks of dev-chain traffic, cached as an anvil state snapshot).

    .venv/bin/python bench/backfill_dispatcher.py [--blocks 2000] [--chunk-size 250] [--rounds 2]

Starts its own embedded Postgres unless ``TRACE_DATABASE_URL`` is set; either way it works in a
scratch database it creates and drops.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from backfill_engines import Chain, history_chain, run_engine  # bench/ is on sys.path
from dispatcher_leases import drop_database, scratch_database

from devstack.postgres import PostgresSpec, start_postgres, stop_postgres
from devstack.process import free_port

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the dispatcher stack of the integration tests
from tests.integration.dispatcher_stack import running_dispatcher  # noqa: E402

DATASETS = ("blocks", "transactions", "logs")


async def through_dispatcher(db_url: str, chain: Chain, root: Path, chunk_size: int,
                             slots: int) -> tuple[float, dict[str, int], int]:
    """One backfill run of the whole history: (seconds, committed rows per dataset, tasks)."""
    async with running_dispatcher(db_url, root / "objects", chain.rpc_url, lease_s=30) as stack:
        await stack.start_worker(slots=slots, idle_poll_s=2.0)
        await asyncio.sleep(0.5)  # the worker is listening
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            started = time.perf_counter()
            run_id = await stack.submit(chain.first, chain.last, chunk_size=chunk_size)
            while True:
                row = await (await conn.execute("SELECT state FROM state.runs WHERE run_id = %s",
                                                (run_id,))).fetchone()
                assert row is not None
                if row[0] != "running":
                    break
                await asyncio.sleep(0.01)
            seconds = time.perf_counter() - started
            if row[0] != "succeeded":
                raise RuntimeError(f"backfill run {run_id} ended {row[0]}")
            rows = dict.fromkeys(DATASETS, 0)
            for dataset, n in await (await conn.execute(
                "SELECT dataset_id, sum(rows)::bigint FROM state.task_outputs WHERE run_id = %s"
                " GROUP BY dataset_id", (run_id,))).fetchall():
                rows[dataset] = int(n)
            (tasks,) = await (await conn.execute(  # type: ignore[misc]
                "SELECT count(*) FROM state.tasks WHERE run_id = %s", (run_id,))).fetchone()
        shutil.rmtree(root / "objects", ignore_errors=True)  # the workers' directory store
    return seconds, rows, int(tasks)


async def measure(db_url: str, chain: Chain, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    blocks = chain.last - chain.first + 1
    best: dict[str, float] = {}
    rows: dict[str, dict[str, int]] = {}
    tasks = 0

    def keep(name: str, seconds: float, got: dict[str, int], round_no: int) -> None:
        rate = blocks / seconds
        best[name] = max(best.get(name, 0.0), rate)
        rows[name] = dict(got)
        print(json.dumps({"round": round_no, "path": name, "blocks_per_s": round(rate, 1)}), flush=True)

    for round_no in range(args.rounds):
        order = ["bare_rpc_extract", "cryo_extract", "bare_rpc_ingest", "cryo_ingest", "dispatcher"]
        if round_no % 2:
            order.reverse()
        for name in order:
            if name == "dispatcher":
                seconds, got, tasks = await through_dispatcher(db_url, chain, root, args.chunk_size,
                                                               args.slots)
                keep(name, seconds, got, round_no)
                continue
            engine = "cryo" if name.startswith("cryo") else "rpc"
            out = root / f"out-{name}" if name.endswith("ingest") else None
            run = await run_engine(engine, chain.rpc_url, chain.first, chain.last, out_dir=out,
                                   chunk_size=args.chunk_size, concurrency=args.concurrency)
            keep(name, run.seconds, {str(k): v for k, v in run.rows.items()}, round_no)
            if out is not None:
                shutil.rmtree(out)
    if any(r != rows["bare_rpc_ingest"] for r in rows.values()):
        raise RuntimeError(f"row counts differ between paths: {rows}")
    return {
        "blocks": blocks,
        "transactions": chain.transactions,
        "chunk_size": args.chunk_size,
        "chunk_tasks": tasks - 1,
        "worker_slots": args.slots,
        "rows": rows["dispatcher"],
        **{f"{name}_blocks_per_s": round(rate, 1) for name, rate in best.items()},
        "ratio_dispatcher_to_bare_rpc_extract": round(best["dispatcher"] / best["bare_rpc_extract"], 2),
        "ratio_dispatcher_to_bare_rpc_ingest": round(best["dispatcher"] / best["bare_rpc_ingest"], 2),
        "ratio_rpc_extract_to_cryo_extract": round(best["bare_rpc_extract"] / best["cryo_extract"], 2),
        "ratio_rpc_ingest_to_cryo_ingest": round(best["bare_rpc_ingest"] / best["cryo_ingest"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--blocks", type=int, default=2000)
    parser.add_argument("--tx-per-block", type=int, default=8)
    parser.add_argument("--chunk-size", type=int, default=250)
    parser.add_argument("--concurrency", type=int, default=4, help="in-flight RPC batches of a bare run")
    parser.add_argument("--slots", type=int, default=4, help="the worker's task slots")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rebuild", action="store_true", help="ignore the cached history snapshot")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="trace-bench-backfill-dispatcher-"))
    root.chmod(0o755)  # Postgres runs as an unprivileged uid and must reach its data dir
    (root / "run").mkdir(mode=0o700)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(root / "run"))
    server_url = os.environ.get("TRACE_DATABASE_URL")
    spec = None
    try:
        if server_url is None:
            spec = PostgresSpec(data_dir=root / "pg", log_path=root / "pg.log", port=free_port())
            start_postgres(spec)
            server_url = spec.url
        name, db_url = scratch_database(server_url)
        try:
            with history_chain(root, blocks=args.blocks, tx_per_block=args.tx_per_block,
                               rebuild=args.rebuild) as chain:
                result = asyncio.run(measure(db_url, chain, args, root))
            print(json.dumps(result, indent=2))
        finally:
            drop_database(server_url, name)
    finally:
        if spec is not None:
            stop_postgres(spec.data_dir)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
