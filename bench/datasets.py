"""Benchmarks of versioned datasets (issue 9): commit throughput and cutover latency.

Prints, on the same machine in the same run, for each object store (SeaweedFS S3, a directory):

1. commit throughput: F tasks' Parquet files (zstd, contract types), each task R ``blocks`` rows
   and, with ``--transactions K``, about K ``transactions`` rows per block (a chunk of a busy
   chain writes far more transaction rows than block rows), written
   - by pyarrow alone into the store (the baseline), and
   - through the protocol: the same files staged by a run's tasks, fenced completions, then
     ``commit_run`` (a version on a branch replacing the run's block range, the integrity check
     reading the staged rows back, its manifest, the cutover and Iceberg ``main`` following);
   as rows/s of each and the ratio protocol / baseline (target >= 0.8), with the protocol's time
   split into the tasks (writes and completions) and ``commit_run``. ``--slots N`` runs N tasks at
   once on both sides (a worker runs 4), else one after the other. The tables exist before (the
   first commit ever creates them); which side goes first alternates by round;
2. cutover latency: ``DatasetStore.cutover`` of 10 datasets' pointers at once, alternating two
   version sets, K times: p50 / p99 / max (target p99 < 50 ms).

    .venv/bin/python bench/datasets.py [--files 20] [--rows 5000] [--transactions 0] [--slots 1]
                                       [--rounds 3] [--cutovers 300]

Starts its own embedded Postgres and SeaweedFS (a scratch database, a unique prefix per round);
the timings start after they are up, the catalog open and the run submitted.
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
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
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
from tracekit.iceberg import ensure_table, open_catalog
from tracekit.objects import ObjectStore, S3Config
from tracekit.objects_open import open_object_store

BLOCKS = contract("blocks")
TRANSACTIONS = contract("transactions")
INGEST = JobPolicy("ingest", "cryo_ingest", writes=("blocks", "transactions"))
Chunk = Mapping[str, pa.Table]  # one task's files: dataset -> rows


def _hash(number: int) -> bytes:
    return hashlib.sha256(number.to_bytes(8, "big", signed=True)).digest()


def _counts(first: int, last: int, per_block: int) -> list[int]:
    """Transactions per block: about ``per_block`` (0: the blocks-only figures' i % 50, no rows)."""
    if per_block == 0:
        return [i % 50 for i in range(first, last + 1)]
    return [max(0, per_block + i % 7 - 3) for i in range(first, last + 1)]


def blocks(first: int, last: int, per_block: int = 0) -> pa.Table:
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
        "n_transactions": pa.array(_counts(first, last, per_block), pa.int32()),
        "chain_id": pa.array([10143] * n, pa.int64()),
    }), BLOCKS)


def _random(n: int, width: int) -> pa.Array:
    """``n`` random values of ``width`` bytes (hashes, addresses: they do not compress)."""
    data = pa.py_buffer(os.urandom(n * width))
    raw = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, data])
    return raw.cast(pa.binary())


def transactions(first: int, last: int, per_block: int) -> pa.Table:
    """As many rows per block as ``blocks(first, last, per_block)`` says, shaped like ERC-20 transfers:
    random hashes and addresses, 68 bytes of call data (selector, address, amount)."""
    keys = [(b, i) for b, count in zip(range(first, last + 1), _counts(first, last, per_block), strict=True)
            for i in range(count)]
    n = len(keys)
    recipients, amounts = os.urandom(20 * n), os.urandom(8 * n)
    calls = [b"\xa9\x05\x9c\xbb" + b"\x00" * 12 + recipients[20 * k:20 * k + 20] + b"\x00" * 24
             + amounts[8 * k:8 * k + 8] for k in range(n)]
    values = [k % 1000 * 10**15 for k in range(n)]
    return conform(pa.table({
        "block_number": pa.array([b for b, _ in keys], pa.int64()),
        "transaction_index": pa.array([i for _, i in keys], pa.int32()),
        "transaction_hash": _random(n, 32), "nonce": pa.array([k % 5000 for k in range(n)], pa.int64()),
        "from_address": _random(n, 20), "to_address": _random(n, 20),
        "value_binary": pa.array([v.to_bytes(32, "big") for v in values], pa.binary()),
        "value_string": pa.array([str(v) for v in values], pa.string()),
        "value_f64": pa.array([float(v) for v in values], pa.float64()),
        "input": pa.array(calls, pa.binary()),
        "gas_limit": pa.array([60_000] * n, pa.int64()),
        "gas_used": pa.array([51_000 + k % 97 for k in range(n)], pa.int64()),
        "gas_price": pa.array([50 * 10**9 + k % 1000 for k in range(n)], pa.int64()),
        "transaction_type": pa.array([2] * n, pa.int32()),
        "max_priority_fee_per_gas": pa.array([10**9] * n, pa.int64()),
        "max_fee_per_gas": pa.array([100 * 10**9] * n, pa.int64()),
        "success": pa.array([k % 50 != 0 for k in range(n)]),
        "n_input_bytes": pa.array([68] * n, pa.int32()), "n_input_zero_bytes": pa.array([36] * n, pa.int32()),
        "n_input_nonzero_bytes": pa.array([32] * n, pa.int32()),
        "chain_id": pa.array([10143] * n, pa.int64()),
    }), TRANSACTIONS)


def chunk(first: int, last: int, per_block: int) -> Chunk:
    rows = {"blocks": blocks(first, last, per_block)}
    if per_block > 0:
        rows["transactions"] = transactions(first, last, per_block)
    return rows


def write(store: ObjectStore, key: str, table: pa.Table) -> str:
    pq.write_table(table, store.pyarrow_path(key), filesystem=store.pyarrow_filesystem(), compression="zstd")
    return store.url(key)


def _each(slots: int, work: list[Chunk], do: Callable[[int, Chunk], None]) -> None:
    """``do(i, chunk)`` for every chunk: one after the other, or ``slots`` at once."""
    if slots == 1:
        for i, part in enumerate(work):
            do(i, part)
        return
    with ThreadPoolExecutor(slots) as pool:
        list(pool.map(lambda job: do(*job), enumerate(work)))


def baseline(store: ObjectStore, parts: list[Chunk], slots: int) -> float:
    prefix = f"bench-baseline/{uuid.uuid4().hex}"

    def task(i: int, part: Chunk) -> None:
        for dataset, rows in part.items():
            write(store, f"{prefix}/{i:05d}/{dataset}.parquet", rows)

    start = time.perf_counter()
    _each(slots, parts, task)
    return time.perf_counter() - start


async def protocol(url: str, store: ObjectStore, warehouse: str, s3: S3Config | None,
                   parts: list[Chunk], rows: int, slots: int) -> tuple[float, float]:
    """Seconds of the tasks (writes and fenced completions) and of ``commit_run``."""
    org = f"bench-{uuid.uuid4().hex[:8]}"
    namespace = f"bench_{uuid.uuid4().hex[:8]}"
    catalog = open_catalog(url, warehouse, s3)
    try:
        for dataset in parts[0]:  # the tables exist before a run commits (the first commit ever creates them)
            ensure_table(catalog, namespace, contract(dataset))
        async with AsyncConnectionPool(url, min_size=1, max_size=4, open=False) as pool:
            tasks = TaskStore(pool, StaticJobCatalog({"ingest": INGEST}), lease=timedelta(minutes=5))
            run = await tasks.submit_run(
                org_id=org, kind="backfill", dag="backfill", dag_version=1,
                params={"start_block": 0, "end_block": len(parts) * rows - 1}, submitted_by="bench",
                tasks=[NewTask(INGEST, f"{org}-{i}", {}) for i in range(len(parts))])
            leased = sorted(await tasks.claim("bench", limit=len(parts), org_id=org), key=lambda t: t.task_id)
            gate = asyncio.Semaphore(slots)

            async def task(i: int) -> None:
                lease, part = leased[i], parts[i]
                async with gate:
                    outputs = []
                    for dataset, table in part.items():
                        key = f"_staging/{run.run_id}/{lease.task_id}.{lease.attempt}/{dataset}.parquet"
                        uri = write(store, key, table) if slots == 1 else \
                            await asyncio.to_thread(write, store, key, table)
                        outputs.append(Output(dataset, uri, table.num_rows, 0, i * rows, (i + 1) * rows - 1))
                    if await tasks.complete(Completion(lease.task_id, lease.attempt, "succeeded",
                                                       outputs=outputs)) is not Fence.OK:
                        raise RuntimeError("a completion was fenced")

            start = time.perf_counter()
            if slots == 1:
                for i in range(len(parts)):
                    await task(i)
            else:
                await asyncio.gather(*(task(i) for i in range(len(parts))))
            staged = time.perf_counter()
            with DatasetStore(url, org) as datasets:
                await asyncio.to_thread(commit_run, datasets, catalog, run.run_id, namespace=namespace)
            return staged - start, time.perf_counter() - staged
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
    parts = [chunk(i * args.rows, (i + 1) * args.rows - 1, args.transactions) for i in range(args.files)]
    total = sum(t.num_rows for part in parts for t in part.values())
    what = f"{args.rows} blocks rows" + (f" + {sum(p['transactions'].num_rows for p in parts) // args.files} "
                                         "transactions rows" if args.transactions else "")
    print(f"commit: {args.files} tasks x {what}, {args.slots} at once, best of {args.rounds}")
    print(f"{'store':>10} {'pyarrow rows/s':>15} {'protocol rows/s':>16} {'protocol/pyarrow':>17}"
          f" {'tasks s':>8} {'commit_run s':>13}")
    for kind in ("s3", "dir"):
        base, proto = [], []
        for round_ in range(args.rounds):
            unique = uuid.uuid4().hex[:10]
            if kind == "s3":
                store = open_object_store(f"s3://datasets/bench/{unique}", s3)
                warehouse, config = f"s3://datasets/bench-warehouse/{unique}", s3
            else:
                store = open_object_store((root / "objects" / unique).as_uri())
                warehouse, config = (root / "warehouse" / unique).as_uri(), None
            if round_ % 2:  # which goes first alternates (warm caches)
                proto.append(await protocol(url, store, warehouse, config, parts, args.rows, args.slots))
            base.append(baseline(store, parts, args.slots))
            if not round_ % 2:
                proto.append(await protocol(url, store, warehouse, config, parts, args.rows, args.slots))
        best = min(proto, key=sum)
        b, p = total / min(base), total / sum(best)
        print(f"{kind:>10} {b:>15,.0f} {p:>16,.0f} {p / b:>17.2f} {best[0]:>8.2f} {best[1]:>13.2f}")
    took = cutovers(url, args.cutovers)
    print(f"cutover of 10 datasets x {args.cutovers}: p50 {pct(took, 50):.1f} ms, p99 {pct(took, 99):.1f} ms,"
          f" max {max(took):.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=20, help="F tasks per commit (a file per dataset each)")
    parser.add_argument("--rows", type=int, default=5000, help="R blocks per task (rows of its blocks file)")
    parser.add_argument("--transactions", type=int, default=0,
                        help="K: each task also writes about K transactions per block (0: blocks only)")
    parser.add_argument("--slots", type=int, default=1, help="tasks at once, on both sides (a worker runs 4)")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per figure (best is shown)")
    parser.add_argument("--cutovers", type=int, default=300, help="K cutovers timed")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="trace-bench-datasets-"))
    root.chmod(0o755)  # Postgres runs as an unprivileged uid and must reach its data dir
    (root / "run").mkdir(mode=0o700)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(root / "run"))
    pg = PostgresSpec(data_dir=root / "pg", log_path=root / "pg.log", port=free_port())
    start_postgres(pg)
    ports = free_seaweedfs_ports()
    weed = SeaweedfsSpec(root / "seaweedfs", access_key_id="BENCH" + secrets.token_hex(6).upper(),
                         secret_access_key=secrets.token_urlsafe(30), s3_port=ports["s3_port"],
                         master_port=ports["master_port"], volume_port=ports["volume_port"],
                         filer_port=ports["filer_port"], admin_port=ports["admin_port"])
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
