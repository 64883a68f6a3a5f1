"""Benchmarks of versioned datasets (issue 9): commit throughput and cutover latency.

Prints, on the same machine in the same run, for each object store (SeaweedFS S3, a directory):

1. commit throughput: F Parquet files of R ``blocks`` rows each (contract types), written
   - by pyarrow alone into the store (the baseline), and
   - through the protocol: the same files staged by a run's tasks, fenced completions, then
     ``commit_run`` (a version on a branch replacing the run's block range, its manifest, the
     cutover and Iceberg ``main`` following);
   as rows/s of each and the ratio protocol / baseline (target >= 0.8);
2. cutover latency: ``DatasetStore.cutover`` of 10 datasets' pointers at once, alternating two
   version sets, K times: p50 / p99 / max (target p99 < 50 ms).

    .venv/bin/python bench/datasets.py [--files 20] [--rows 5000] [--rounds 3] [--cutovers 300]

Starts its own embedded Postgres and SeaweedFS (a scratch database, a unique prefix per round).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import secrets
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from dispatcher_leases import drop_database, scratch_database  # bench/ is on sys.path
from harness import pct
from psycopg_pool import AsyncConnectionPool

from devstack.postgres import PostgresSpec, start_postgres, stop_postgres
from devstack.process import free_port
from devstack.seaweedfs import SeaweedfsSpec, ensure_buckets, free_seaweedfs_ports, start_seaweedfs
from dispatcher.catalog import JobPolicy, StaticJobCatalog
from dispatcher.completion import Completion, Output
from dispatcher.datasets.commit import commit_run
from dispatcher.datasets.pointers import VersionState
from dispatcher.datasets.store import DatasetStore
from dispatcher.lease import Fence
from dispatcher.runs import NewTask
from dispatcher.store import TaskStore
from tracekit.datasets import conform, contract
from tracekit.iceberg import open_catalog
from tracekit.objects import ObjectStore, S3Config
from tracekit.objects_open import open_object_store

BLOCKS = contract("blocks")
INGEST = JobPolicy("ingest", "cryo_ingest", writes=("blocks",))


def _hash(number: int) -> bytes:
    return hashlib.sha256(number.to_bytes(8, "big", signed=True)).digest()


def blocks(first: int, last: int) -> pa.Table:
    numbers = list(range(first, last + 1))
    n = len(numbers)
    return conform(pa.table({
        "block_number": pa.array(numbers, pa.int64()),
        "block_hash": pa.array([_hash(i) for i in numbers], pa.binary()),
        "parent_hash": pa.array([_hash(i - 1) for i in numbers], pa.binary()),  # a chain: integrity holds
        "author": pa.array([b"\x11" * 20] * n, pa.binary()),
        "gas_used": pa.array([21_000 * (i % 50) for i in numbers], pa.int64()),
        "extra_data": pa.array([b""] * n, pa.binary()),
        "timestamp": pa.array([1_700_000_000 + i for i in numbers], pa.int64()),
        "base_fee_per_gas": pa.array([7] * n, pa.int64()),
        "n_transactions": pa.array([i % 50 for i in numbers], pa.int32()),
        "chain_id": pa.array([10143] * n, pa.int64()),
    }), BLOCKS)


def write(store: ObjectStore, key: str, table: pa.Table) -> str:
    pq.write_table(table, store.pyarrow_path(key), filesystem=store.pyarrow_filesystem(), compression="zstd")
    return store.url(key)


def baseline(store: ObjectStore, parts: list[pa.Table]) -> float:
    start = time.perf_counter()
    for i, part in enumerate(parts):
        write(store, f"bench-baseline/{uuid.uuid4().hex}/{i:05d}.parquet", part)
    return time.perf_counter() - start


async def protocol(url: str, store: ObjectStore, warehouse: str, s3: S3Config | None,
                   parts: list[pa.Table], rows: int) -> float:
    org = f"bench-{uuid.uuid4().hex[:8]}"
    catalog = open_catalog(url, warehouse, s3)
    try:
        async with AsyncConnectionPool(url, min_size=1, max_size=4, open=False) as pool:
            tasks = TaskStore(pool, StaticJobCatalog({"ingest": INGEST}), lease=timedelta(minutes=5))
            run = await tasks.submit_run(
                org_id=org, kind="backfill", dag="backfill", dag_version=1,
                params={"start_block": 0, "end_block": len(parts) * rows - 1}, submitted_by="bench",
                tasks=[NewTask(INGEST, f"{org}-{i}", {}) for i in range(len(parts))])
            leased = sorted(await tasks.claim("bench", limit=len(parts), org_id=org), key=lambda t: t.task_id)
            start = time.perf_counter()
            for i, (task, part) in enumerate(zip(leased, parts, strict=True)):
                key = f"_staging/{run.run_id}/{task.task_id}.{task.attempt}/blocks.parquet"
                uri = write(store, key, part)
                done = Completion(task.task_id, task.attempt, "succeeded", outputs=[
                    Output("blocks", uri, part.num_rows, 0, i * rows, (i + 1) * rows - 1)])
                if await tasks.complete(done) is not Fence.OK:
                    raise RuntimeError("a completion was fenced")
            await asyncio.to_thread(commit_run, DatasetStore(url, org), catalog, run.run_id,
                                    namespace=f"bench_{uuid.uuid4().hex[:8]}")
            return time.perf_counter() - start
    finally:
        catalog.close()


def cutovers(url: str, times: int) -> list[float]:
    store = DatasetStore(url, f"bench-{uuid.uuid4().hex[:8]}")
    names = [f"dataset_{i:02d}" for i in range(10)]
    sets: list[dict[str, int]] = [{}, {}]
    for name in names:
        store.ensure_dataset(name, table_name=f"bench.{name}")
        for which in (0, 1):
            version = store.begin_version(name)
            store.finish_version(name, version, state=VersionState.READY)
            sets[which][name] = version
    took = []
    for i in range(times):
        start = time.perf_counter()
        store.cutover(sets[i % 2], actor="bench")
        took.append((time.perf_counter() - start) * 1000)
    return took


async def measure(url: str, s3: S3Config, root: Path, args: argparse.Namespace) -> None:
    parts = [blocks(i * args.rows, (i + 1) * args.rows - 1) for i in range(args.files)]
    total = args.files * args.rows
    print(f"commit: {args.files} files x {args.rows} blocks rows, best of {args.rounds}")
    print(f"{'store':>10} {'pyarrow rows/s':>15} {'protocol rows/s':>16} {'protocol/pyarrow':>17}")
    for kind in ("s3", "dir"):
        base, proto = [], []
        for _ in range(args.rounds):
            unique = uuid.uuid4().hex[:10]
            if kind == "s3":
                store = open_object_store(f"s3://datasets/bench/{unique}", s3)
                warehouse, config = f"s3://datasets/bench-warehouse/{unique}", s3
            else:
                store = open_object_store((root / "objects" / unique).as_uri())
                warehouse, config = (root / "warehouse" / unique).as_uri(), None
            base.append(baseline(store, parts))
            proto.append(await protocol(url, store, warehouse, config, parts, args.rows))
        b, p = total / min(base), total / min(proto)
        print(f"{kind:>10} {b:>15,.0f} {p:>16,.0f} {p / b:>17.2f}")
    took = cutovers(url, args.cutovers)
    print(f"cutover of 10 datasets x {args.cutovers}: p50 {pct(took, 50):.1f} ms, p99 {pct(took, 99):.1f} ms,"
          f" max {max(took):.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=20, help="F files per commit")
    parser.add_argument("--rows", type=int, default=5000, help="R rows per file (blocks)")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per figure (best is shown)")
    parser.add_argument("--cutovers", type=int, default=300, help="K cutovers timed")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="trace-bench-datasets-"))
    root.chmod(0o755)  # Postgres runs as an unprivileged uid and must reach its data dir
    (root / "run").mkdir(mode=0o700)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(root / "run"))
    pg = PostgresSpec(data_dir=root / "pg", log_path=root / "pg.log", port=free_port())
    start_postgres(pg)
    weed = SeaweedfsSpec(root / "seaweedfs", access_key_id="BENCH" + secrets.token_hex(6).upper(),
                         secret_access_key=secrets.token_urlsafe(30), **free_seaweedfs_ports())
    proc = start_seaweedfs(weed, root / "seaweedfs.log")
    try:
        ensure_buckets(weed.s3_config())
        name, _ = scratch_database(pg.url)
        url = pg.url.rsplit("/", 1)[0] + f"/{name}"  # a URL (the Iceberg catalog takes no conninfo string)
        try:
            asyncio.run(measure(url, weed.s3_config(), root, args))
        finally:
            drop_database(pg.url, name)
    finally:
        proc.terminate()
        proc.wait(30)
        stop_postgres(pg.data_dir)


if __name__ == "__main__":
    main()
