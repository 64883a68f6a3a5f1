"""Finalization (hot -> cold) against a bare Postgres -> Arrow -> Parquet copy of the same rows.

Fills the hot tables of its own embedded Postgres with a synthetic chain (``--blocks`` blocks, and
the finality depth above them, of ``--tx`` transactions and ``--logs`` logs each; 30 % of the logs
ERC-20 ``Transfer`` events with their ``hot.transfers`` rows, 2 staking events a block with their
``hot.stake_changes`` rows; uint256 amounts up to 10**27; block hashes that link; written with
COPY, not timed), then, per round, on one batch of ``--batch`` blocks (the batches in turn, the
order of the paths alternating by round):

1. **bare copy** (the baseline): for each hot table, ``COPY (SELECT <the columns the aggregator
   reads> FROM hot.<table> WHERE chain_id = .. AND block_number BETWEEN .. ORDER BY <key>) TO
   STDOUT (FORMAT csv)`` read into ``pyarrow.csv`` with the columns' Postgres types (``numeric``
   as text: a uint256 fits no Arrow integer), written as one zstd Parquet file in memory. No
   snapshot across tables, no checks, no conversion;
2. **aggregate_batch**: the aggregator operator's function alone (``operators/aggregator``): the
   batch read in one REPEATABLE READ transaction, canonical rows only, checked, converted to each
   dataset's contract, encoded as zstd Parquet in memory;
3. **operator** and **end to end**: a ``finalize`` run submitted to the task store, its task
   leased, the worker's ``aggregator`` operator (``dispatcher/worker/operators.py``:
   ``aggregate_batch``, then each file staged in the object store under the attempt's prefix: the
   "operator" figure), the fenced completion, then ``commit_run`` (a version per dataset replacing
   the batch's range, the integrity check reading the staged rows back, the cutover with the cold
   watermark, Iceberg ``main`` following): the "end to end" figure, from the operator's start to
   the commit's end. One org and namespace for all rounds, its tables created before (not timed);
   no HTTP API, queue or worker loop in between (bench/backfill_dispatcher.py measures those).

Prints rows/s (the rows of all five tables) of each path per round and their medians over
``--rounds``, aggregate_batch / bare copy (target >= 0.5), and the steps of one more
aggregate_batch (read and checks, CSV parsing beside them, conversion, encoding).

    .venv/bin/python bench/finalize.py [--blocks 20000] [--batch 10000] [--rounds 3] [--store s3|dir]

Starts its own embedded Postgres and SeaweedFS (S3: the default object store; ``--store dir`` for
a directory) in a temporary directory, and removes them at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import secrets
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from devstack.postgres import PostgresSpec, start_postgres, stop_postgres
from devstack.process import free_port
from devstack.seaweedfs import SeaweedfsSpec, ensure_buckets, free_seaweedfs_ports, start_seaweedfs
from dispatcher.catalog import JobPolicy, StaticJobCatalog
from dispatcher.completion import Completion, Output
from dispatcher.datasets.commit import commit_run
from dispatcher.datasets.store import DatasetStore
from dispatcher.lease import Fence
from dispatcher.protocol import LeasedTask
from dispatcher.runs import NewTask
from dispatcher.store import TaskStore
from dispatcher.worker import WorkerEnv
from dispatcher.worker.client import DispatcherClient
from dispatcher.worker.context import TaskContext
from dispatcher.worker.operators import aggregator
from operators.aggregator import DATASETS, Batch, aggregate_batch
from operators.aggregator.aggregate import batch_files, read_batch
from operators.aggregator.transform import HOT_COLUMNS, hot_table
from tracekit.datasets import contract
from tracekit.db import migrate
from tracekit.iceberg import ensure_table, open_catalog
from tracekit.objects import ObjectStore, S3Config
from tracekit.objects_open import open_object_store

CHAIN_ID = 10143
CHAIN = "bench"
FINALITY = 10
COMPRESSION = "zstd"
TRANSFER = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
APPROVAL = "0x8c5be1e5ebec7d5bd14f71427d1e84f3dd0314c0f7b2291e5b200ac8c7c3b925"
SWAP = "0xd78ad95fa46c994b6551d0da85fc275fe613ce37657fb8d5e9d1bb3f6ae1e4c5"
SYNC = "0x1c411e9a96e071241c2f21f7726b17ae89e3cab4c78be50e062b03a9fffbbad1"
DELEGATE = "0x" + hashlib.sha256(b"Delegate(address,address,uint256)").hexdigest()
ZERO = "0x" + "00" * 20
KEYS = {"blocks": "block_number", "transactions": "block_number, transaction_index",
        "logs": "block_number, log_index", "transfers": "block_number, log_index",
        "stake_changes": "block_number, log_index"}

# ----------------------------------------------------------------------------- the synthetic chain


def _hash(kind: bytes, *numbers: int) -> str:
    return "0x" + hashlib.sha256(kind + b":".join(b"%d" % n for n in numbers)).hexdigest()


class Chain:
    """Deterministic synthetic chain rows, as COPY text lines of the hot tables."""

    def __init__(self, seed: int, tx: int, logs: int) -> None:
        self.r = random.Random(seed)
        self.tx, self.logs = tx, logs
        self.addresses = ["0x" + self.r.randbytes(20).hex() for _ in range(2_000)]
        self.tokens = ["0x" + self.r.randbytes(20).hex() for _ in range(5)]
        self.staking = "0x" + self.r.randbytes(20).hex()
        self.validators = self.addresses[:20]

    def address(self) -> str:
        return self.addresses[int(self.r.paretovariate(1.2)) % len(self.addresses)]

    def amount(self) -> int:
        return self.r.randint(1, 999) * int(10 ** self.r.randint(0, 24))

    @staticmethod
    def topic(address: str) -> str:
        return "0x" + "00" * 12 + address[2:]

    def block(self, n: int, out: dict[str, list[str]]) -> None:
        r = self.r
        chain = CHAIN_ID
        block_hash = _hash(b"b", n)
        parent = _hash(b"b", n - 1) if n else "0x" + "00" * 32
        ts = 1_700_000_000 + n * 2 // 5
        base_fee = 50_000_000_000 + r.randrange(10_000_000_000)
        out["blocks"].append(f"{chain}\t{n}\t{block_hash}\t{parent}\t{ts}\t{self.address()}\t"
                             f"{21_000 * self.tx + r.randrange(1_000_000)}\t30000000\t{base_fee}\t0x\t"
                             f"{self.tx}\t{self.logs}\t\\N\n")
        hashes = [_hash(b"t", n, i) for i in range(self.tx)]
        senders = [self.address() for _ in range(self.tx)]
        for i, tx_hash in enumerate(hashes):
            kind = i % 10
            value, to, data = "0", self.tokens[i % 5], ""
            if kind < 6:  # an ERC-20 transfer(address,uint256)
                data = "a9059cbb" + self.topic(self.address())[2:] + f"{self.amount():064x}"
            elif kind < 9:  # a plain value transfer
                to, value = self.address(), str(self.amount())
            elif n % 100 == 0 and i == self.tx - 1:  # a contract creation
                to, data = "\\N", r.randbytes(600).hex()
            else:  # a contract call
                to, data = self.staking, "5c19a95c" + r.randbytes(32 * r.randint(1, 4)).hex()
            tip = r.randrange(2_000_000_000)
            out["transactions"].append(
                f"{chain}\t{n}\t{i}\t{tx_hash}\t{block_hash}\t{r.randrange(100_000)}\t{senders[i]}\t{to}\t"
                f"{value}\t0x{data}\t{100_000 + r.randrange(100_000)}\t{base_fee + tip}\t{base_fee * 2}\t"
                f"{tip}\t{21_000 + r.randrange(79_000)}\t{base_fee + tip}\t"
                f"{'f' if r.random() < 0.03 else 't'}\t2\t\\N\n")
        for k in range(self.logs):
            ti = k * self.tx // self.logs
            tx_hash, kind = hashes[ti], k % 10
            if kind in (0, 3, 6):  # an ERC-20 Transfer and its hot.transfers row
                token = self.tokens[k % 5]
                src, dst = self.address(), self.address()
                action = "transfer"
                if r.random() < 0.05:
                    src, action = ZERO, "mint"
                elif r.random() < 0.03:
                    dst, action = ZERO, "burn"
                amount = self.amount()
                usd = "\\N" if r.random() < 0.2 else f"{amount / 1e18 * 1.5:.6f}"
                out["logs"].append(f"{chain}\t{n}\t{k}\t{ti}\t{tx_hash}\t{block_hash}\t{token}\t{TRANSFER}\t"
                                   f"{self.topic(src)}\t{self.topic(dst)}\t\\N\t0x{amount:064x}\n")
                out["transfers"].append(f"{chain}\t{n}\t{block_hash}\t{ts}\t{k}\t{tx_hash}\t{token}\t{src}\t"
                                        f"{dst}\t{amount}\t{action}\t18\t{usd}\t{{}}\t{{}}\t{block_hash}:{k}\n")
            elif k % 50 == 1:  # a staking event and its hot.stake_changes row
                delegator, validator = self.address(), self.validators[k % 20]
                amount = self.amount()
                action = "delegate" if r.random() < 0.7 else "undelegate"
                out["logs"].append(f"{chain}\t{n}\t{k}\t{ti}\t{tx_hash}\t{block_hash}\t{self.staking}\t{DELEGATE}"
                                   f"\t{self.topic(delegator)}\t{self.topic(validator)}\t\\N\t0x{amount:064x}\n")
                out["stake_changes"].append(
                    f"{chain}\t{n}\t{block_hash}\t{ts}\t{k}\t{tx_hash}\t{self.staking}\t{delegator}\t{validator}\t"
                    f"{amount}\t{action}\t{{}}\t{{}}\t{block_hash}:{k}\n")
            elif kind in (1, 4, 8):  # Approval(owner, spender, value)
                out["logs"].append(f"{chain}\t{n}\t{k}\t{ti}\t{tx_hash}\t{block_hash}\t{self.tokens[k % 5]}\t"
                                   f"{APPROVAL}\t{self.topic(self.address())}\t{self.topic(self.address())}\t"
                                   f"\\N\t0x{self.amount():064x}\n")
            elif kind in (2, 7):  # Swap(sender, a0In, a1In, a0Out, a1Out, to)
                out["logs"].append(f"{chain}\t{n}\t{k}\t{ti}\t{tx_hash}\t{block_hash}\t{self.staking}\t{SWAP}\t"
                                   f"{self.topic(self.address())}\t{self.topic(self.address())}\t\\N\t"
                                   f"0x{r.randbytes(128).hex()}\n")
            else:  # Sync(reserve0, reserve1): no indexed argument
                out["logs"].append(f"{chain}\t{n}\t{k}\t{ti}\t{tx_hash}\t{block_hash}\t{self.staking}\t{SYNC}\t"
                                   f"\\N\t\\N\t\\N\t0x{r.randbytes(64).hex()}\n")


COPY_COLUMNS = {
    "blocks": "chain_id, block_number, block_hash, parent_hash, \"timestamp\", author, gas_used, gas_limit, "
              "base_fee_per_gas, extra_data, tx_count, log_count, observed_at",
    "transactions": "chain_id, block_number, transaction_index, transaction_hash, block_hash, nonce, "
                    "from_address, to_address, value, input, gas_limit, gas_price, max_fee_per_gas, "
                    "max_priority_fee_per_gas, gas_used, effective_gas_price, success, transaction_type, "
                    "contract_address",
    "logs": "chain_id, block_number, log_index, transaction_index, transaction_hash, block_hash, address, "
            "topic0, topic1, topic2, topic3, data",
    "transfers": "chain_id, block_number, block_hash, \"timestamp\", log_index, transaction_hash, token, "
                 "from_address, to_address, amount, action, decimals, usd_value, from_labels, to_labels, "
                 "idempotency_key",
    "stake_changes": "chain_id, block_number, block_hash, \"timestamp\", log_index, transaction_hash, "
                     "staking_contract, delegator, validator, amount, action, delegator_labels, "
                     "validator_labels, idempotency_key",
}


def fill(url: str, blocks: int, tx: int, logs: int, seed: int = 7) -> dict[str, int]:
    """Blocks ``0..blocks - 1`` of the synthetic chain into the hot tables (COPY); rows per table."""
    chain = Chain(seed, tx, logs)
    counts = dict.fromkeys(DATASETS, 0)
    step = 500
    with psycopg.connect(url) as conn:
        conn.execute("SET synchronous_commit = off")
        for first in range(0, blocks, step):
            out: dict[str, list[str]] = {d: [] for d in DATASETS}
            for n in range(first, min(blocks, first + step)):
                chain.block(n, out)
            with conn.cursor() as cur:
                for dataset, lines in out.items():
                    with cur.copy(f"COPY hot.{dataset} ({COPY_COLUMNS[dataset]}) FROM STDIN") as copy:
                        copy.write("".join(lines))
                    counts[dataset] += len(lines)
            conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        for dataset in DATASETS:
            conn.execute(f"VACUUM (ANALYZE) hot.{dataset}")
        conn.execute("CHECKPOINT")
    return counts


# ----------------------------------------------------------------------------- the three paths


Types = dict[str, dict[str, pa.DataType]]


def bare_copy(url: str, batch: Batch, types: Types) -> tuple[float, dict[str, int]]:
    """The baseline: each hot table's rows of ``batch`` (the columns the aggregator reads), COPY ->
    pyarrow.csv -> one zstd Parquet file in memory. Seconds and rows per table."""
    rows = {}
    start = time.perf_counter()
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        for dataset in DATASETS:
            columns = HOT_COLUMNS[dataset]
            query = sql.SQL("COPY (SELECT {} FROM hot.{} WHERE chain_id = %s"
                            " AND block_number BETWEEN %s AND %s ORDER BY {}) TO STDOUT (FORMAT csv)").format(
                sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(dataset),
                sql.SQL(KEYS[dataset]))
            data = bytearray()
            with cur.copy(query, (CHAIN_ID, batch.start, batch.end)) as copy:
                for block in copy:
                    data += block
            table = pacsv.read_csv(
                pa.py_buffer(data), read_options=pacsv.ReadOptions(column_names=list(columns)),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: types[dataset][c] for c in columns}, null_values=[""],
                    strings_can_be_null=True, quoted_strings_can_be_null=False, true_values=["t"],
                    false_values=["f"]))
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink, compression=COMPRESSION)
            rows[dataset] = table.num_rows
    return time.perf_counter() - start, rows


def column_types(url: str) -> Types:
    """Each hot column's Arrow type, from its Postgres type (``numeric``: text, a uint256 fits no
    Arrow integer)."""
    arrow = {"bigint": pa.int64(), "integer": pa.int32(), "text": pa.string(), "numeric": pa.string(),
             "boolean": pa.bool_()}
    types: Types = {d: {} for d in DATASETS}
    with psycopg.connect(url) as conn:
        for table, column, kind in conn.execute(
                "SELECT table_name, column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = 'hot' AND table_name = ANY(%s)", (list(DATASETS),)):
            if kind in arrow:
                types[table][column] = arrow[kind]
    return types


def finalize_only(url: str, batch: Batch) -> tuple[float, dict[str, int]]:
    start = time.perf_counter()
    files = aggregate_batch(url, CHAIN_ID, CHAIN, batch, finality_depth=FINALITY)
    took = time.perf_counter() - start
    rows = dict.fromkeys(DATASETS, 0)
    for f in files:
        rows[f.dataset] += f.rows
    return took, rows


AGGREGATE = JobPolicy("aggregate", "aggregator", writes=DATASETS)


class EndToEnd:
    """A ``finalize`` run per batch in one org: task leased, the worker's ``aggregator`` operator
    (files staged in ``store``), the fenced completion, ``commit_run``."""

    def __init__(self, url: str, store: ObjectStore, store_url: str, warehouse: str,
                 s3: S3Config | None) -> None:
        self.url, self.store, self.store_url = url, store, store_url
        self.org = f"bench-{uuid.uuid4().hex[:8]}"
        self.namespace = f"bench_{uuid.uuid4().hex[:8]}"
        self.catalog = open_catalog(url, warehouse, s3)
        for dataset in DATASETS:  # the tables exist, as they do in steady state (not timed)
            ensure_table(self.catalog, self.namespace, contract(dataset))

    async def run(self, batch: Batch) -> tuple[float, float, dict[str, int]]:
        """Seconds of the operator (aggregate_batch + staging), of the whole (+ completion + commit),
        and the rows committed per dataset."""
        params = {"chain_id": CHAIN_ID, "chain": CHAIN, "start_block": batch.start, "end_block": batch.end}
        async with AsyncConnectionPool(self.url, min_size=1, max_size=2, open=False) as pool:
            tasks = TaskStore(pool, StaticJobCatalog({"aggregate": AGGREGATE}), lease=timedelta(minutes=30))
            run = await tasks.submit_run(
                org_id=self.org, kind="finalize", dag="finalize", dag_version=1, params=params,
                submitted_by="bench", tasks=[NewTask(AGGREGATE, f"{self.org}-{uuid.uuid4().hex}", {
                    "params": params, "config": {"datasets": list(DATASETS)}})])
            (claim,) = await tasks.claim("bench", limit=1, org_id=self.org)
            env = WorkerEnv(store=self.store, store_url=self.store_url, confirmations=FINALITY,
                            database_url=self.url)
            ctx = TaskContext(LeasedTask.of(claim, "bench"), env, cast(DispatcherClient, None))
            start = time.perf_counter()
            outputs = await aggregator(ctx)
            staged = time.perf_counter()
            done = Completion(claim.task_id, claim.attempt, "succeeded", outputs=[
                Output(o.dataset_id, o.uri, o.rows, o.bytes, o.block_start, o.block_end, o.sha256)
                for o in outputs])
            if await tasks.complete(done) is not Fence.OK:
                raise RuntimeError("the completion was fenced")
            committed = await asyncio.to_thread(commit_run, DatasetStore(self.url, self.org), self.catalog,
                                                run.run_id, namespace=self.namespace)
            end = time.perf_counter()
        if set(committed.versions) != set(DATASETS):
            raise RuntimeError(f"the commit made versions of {sorted(committed.versions)}")
        rows = dict.fromkeys(DATASETS, 0)
        for o in outputs:
            rows[o.dataset_id] += o.rows
        return staged - start, end - start, rows

    def close(self) -> None:
        self.catalog.close()


# ----------------------------------------------------------------------------- the run


def rate(rows: int, seconds: list[float]) -> float:
    return rows / statistics.median(seconds)


def phases(url: str, batch: Batch) -> dict[str, float]:
    """One more ``aggregate_batch``, cut into its steps: the read in one transaction with the checks
    (``read_batch``; pyarrow.csv parsing runs in a thread beside the reads, its seconds summed
    apart), the conversion to the contracts (``hot_table``), the Parquet encoding
    (``batch_files``). Seconds of each."""
    parsing = 0.0
    read_csv = pacsv.read_csv

    def timed(*args: Any, **kwargs: Any) -> pa.Table:
        nonlocal parsing
        start = time.perf_counter()
        try:
            return read_csv(*args, **kwargs)
        finally:
            parsing += time.perf_counter() - start

    pacsv.read_csv = timed
    try:
        start = time.perf_counter()
        hot = read_batch(url, CHAIN_ID, batch, DATASETS, finality_depth=FINALITY)
        read = time.perf_counter()
        tables = {dataset: hot_table(dataset, hot[dataset]) for dataset in DATASETS}
        converted = time.perf_counter()
        batch_files(CHAIN, batch, tables)
        encoded = time.perf_counter()
    finally:
        pacsv.read_csv = read_csv
    return {"read + checks": read - start, "CSV parsing (beside the reads)": parsing,
            "conversion": converted - read, "encoding": encoded - converted, "total": encoded - start}


async def measure(url: str, store: ObjectStore, store_url: str, warehouse: str, s3: S3Config | None,
                  args: argparse.Namespace) -> None:
    total = args.blocks + FINALITY
    print(f"fill: {total:,} blocks of {args.tx} transactions and {args.logs} logs (not timed)", flush=True)
    started = time.perf_counter()
    filled = fill(url, total, args.tx, args.logs)
    took = time.perf_counter() - started
    print(f"  {', '.join(f'{d} {n:,}' for d, n in filled.items())} rows in {took:.0f} s")
    types = column_types(url)
    batches = [Batch(s, s + args.batch - 1) for s in range(0, args.blocks - args.batch + 1, args.batch)]
    e2e = EndToEnd(url, store, store_url, warehouse, s3)
    times: dict[str, list[float]] = {"bare": [], "aggregate": [], "operator": [], "e2e": []}
    rows: dict[str, int] = {}
    print(f"rows/s per round (paths in turn, the order alternating):\n{'round':>5} {'batch':>22} "
          f"{'bare copy':>10} {'aggregate_batch':>16} {'ratio':>6} {'operator':>10} {'end to end':>11}")
    try:
        for i in range(args.rounds):
            batch = batches[i % len(batches)]
            order = ("bare", "aggregate", "e2e") if i % 2 == 0 else ("e2e", "aggregate", "bare")
            for name in order:
                if name == "bare":
                    bare_s, bare_rows = bare_copy(url, batch, types)
                elif name == "aggregate":
                    agg_s, agg_rows = finalize_only(url, batch)
                else:
                    op_s, e2e_s, e2e_rows = await e2e.run(batch)
            if not bare_rows == agg_rows == e2e_rows:
                raise RuntimeError(f"the paths read different rows: {bare_rows} / {agg_rows} / {e2e_rows}")
            rows = bare_rows
            n = sum(rows.values())
            for name, took in (("bare", bare_s), ("aggregate", agg_s), ("operator", op_s), ("e2e", e2e_s)):
                times[name].append(took)
            print(f"{i + 1:>5} {batch!s:>22} {n / bare_s:>10,.0f} {n / agg_s:>16,.0f} {bare_s / agg_s:>6.2f} "
                  f"{n / op_s:>10,.0f} {n / e2e_s:>11,.0f}", flush=True)
    finally:
        e2e.close()
    n = sum(rows.values())
    bare, agg = rate(n, times["bare"]), rate(n, times["aggregate"])
    op, end = rate(n, times["operator"]), rate(n, times["e2e"])
    ratios = [b / a for b, a in zip(times["bare"], times["aggregate"], strict=True)]
    print(f"{'median':>28} {bare:>10,.0f} {agg:>16,.0f} {statistics.median(ratios):>6.2f} {op:>10,.0f} "
          f"{end:>11,.0f}")
    print(f"rows per batch: {', '.join(f'{d} {r:,}' for d, r in rows.items())} ({n:,})")
    print(f"aggregate_batch / bare copy (medians): {agg / bare:.2f} (target >= 0.5)")
    print(f"operator (aggregate_batch + staging in the store) / bare copy: {op / bare:.2f}")
    print(f"end to end (operator + completion + commit_run) / bare copy: {end / bare:.2f}")
    steps = phases(url, batches[0])
    print(f"aggregate_batch of {batches[0]}, steps: " + ", ".join(f"{k} {v:.2f} s" for k, v in steps.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--blocks", type=int, default=20_000, help="blocks in batches (the fill adds the "
                        f"finality depth, {FINALITY}, above them)")
    parser.add_argument("--batch", type=int, default=10_000, help="blocks per batch")
    parser.add_argument("--tx", type=int, default=50, help="transactions per block")
    parser.add_argument("--logs", type=int, default=100, help="logs per block")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (medians are shown)")
    parser.add_argument("--store", choices=("s3", "dir"), default="s3",
                        help="where the end-to-end path stages files and keeps its tables")
    args = parser.parse_args()
    if args.batch < 1 or args.blocks < args.batch:
        parser.error("--blocks must hold at least one --batch")
    root = Path(tempfile.mkdtemp(prefix="trace-bench-finalize-"))
    root.chmod(0o755)  # Postgres runs as an unprivileged uid and must reach its data dir
    (root / "run").mkdir(mode=0o700)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(root / "run"))
    pg = PostgresSpec(data_dir=root / "pg", log_path=root / "pg.log", port=free_port())
    start_postgres(pg)
    weed = None
    try:
        migrate(pg.url)
        if args.store == "s3":
            ports = free_seaweedfs_ports()
            weed = SeaweedfsSpec(root / "seaweedfs", access_key_id="BENCH" + secrets.token_hex(6).upper(),
                                 secret_access_key=secrets.token_urlsafe(30), s3_port=ports["s3_port"],
                                 master_port=ports["master_port"], volume_port=ports["volume_port"],
                                 filer_port=ports["filer_port"], admin_port=ports["admin_port"])
            proc = start_seaweedfs(weed, root / "seaweedfs.log")
            s3: S3Config | None = weed.s3_config()
            assert s3 is not None
            ensure_buckets(s3)
            unique = uuid.uuid4().hex[:10]
            store_url, warehouse = f"s3://datasets/bench/{unique}", f"s3://datasets/bench-warehouse/{unique}"
            store = open_object_store(store_url, s3)
        else:
            s3 = None
            store_url, warehouse = (root / "objects").as_uri(), (root / "warehouse").as_uri()
            (root / "objects").mkdir()
            store = open_object_store(store_url)
        try:
            asyncio.run(measure(pg.url, store, store_url, warehouse, s3, args))
        finally:
            if weed is not None:
                proc.terminate()
                proc.wait(30)
    finally:
        stop_postgres(pg.data_dir)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
