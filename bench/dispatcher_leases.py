"""Benchmark of the dispatcher's lease path: tasks/s through TaskStore.claim + complete_many.

Prints, on the same database in the same run, for each batch size B:

1. the bare baseline: W asyncio workers, each looping ``UPDATE ... WHERE id IN (SELECT ... FOR
   UPDATE SKIP LOCKED LIMIT B) RETURNING`` and then marking the batch done, over N rows of a
   minimal table;
2. the store: W workers looping ``TaskStore.claim(limit=B)`` + ``complete_many`` (succeeded) over N
   tasks created beforehand through ``submit_run`` (untimed);

and the ratio store / bare. Target: >= 10,000 tasks/s for the store path (2 cores).

    .venv/bin/python bench/dispatcher_leases.py [--tasks 20000] [--workers 4] [--batch 100 500]

Starts its own embedded Postgres unless ``TRACE_DATABASE_URL`` is set; either way it works in a
scratch database it creates (and drops at the end), so nothing of an existing one is touched.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool

from devstack.postgres import PostgresSpec, start_postgres, stop_postgres
from devstack.process import free_port
from dispatcher.catalog import JobPolicy, StaticJobCatalog
from dispatcher.completion import Completion
from dispatcher.lease import Fence
from dispatcher.runs import NewTask
from dispatcher.store import TaskStore
from tracekit.db import migrate

JOB = JobPolicy("bench", "noop")
RUN_SIZE = 1000  # tasks per submitted run (a backfill of 1,000 chunks)

BARE_SCHEMA = """
CREATE TABLE IF NOT EXISTS bench_leases (
    id          bigint PRIMARY KEY,
    state       text NOT NULL DEFAULT 'queued',
    owner       text,
    attempt     integer NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS bench_leases_queued ON bench_leases (id) WHERE state = 'queued';
"""

BARE_CLAIM = """
UPDATE bench_leases SET state = 'leased', owner = %(worker)s, attempt = attempt + 1
WHERE id IN (SELECT id FROM bench_leases WHERE state = 'queued' ORDER BY id
             LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING id, attempt
"""


async def run_workers(workers: int, loop_once: Callable[[int], Awaitable[int]]) -> tuple[int, float]:
    """Run ``workers`` loops of ``loop_once(worker) -> tasks done`` until each finds nothing."""
    done = [0] * workers

    async def worker(i: int) -> None:
        while n := await loop_once(i):
            done[i] += n

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(workers)))
    return sum(done), time.perf_counter() - start


async def bare(url: str, n: int, workers: int, batch: int) -> float:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(BARE_SCHEMA)
        await conn.execute("TRUNCATE bench_leases")
        await conn.execute("INSERT INTO bench_leases (id) SELECT generate_series(1, %s)", (n,))
        await conn.execute("VACUUM ANALYZE bench_leases")
    conns = [await psycopg.AsyncConnection.connect(url, autocommit=True) for _ in range(workers)]
    try:
        async def once(i: int) -> int:
            rows = await (await conns[i].execute(BARE_CLAIM, {"worker": f"w{i}", "limit": batch})).fetchall()
            if not rows:
                return 0
            await conns[i].execute("UPDATE bench_leases SET state = 'done' WHERE id = ANY(%s)",
                                   ([r[0] for r in rows],))
            return len(rows)

        total, elapsed = await run_workers(workers, once)
    finally:
        for c in conns:
            await c.close()
    assert total == n, f"bare: {total} of {n} done"
    return total / elapsed


async def reset_state(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("TRUNCATE state.runs, state.tasks, state.task_attempts, state.outbox CASCADE")


async def create_tasks(store: TaskStore, n: int) -> None:
    tag = uuid.uuid4().hex[:8]
    for start in range(0, n, RUN_SIZE):
        await store.submit_run(
            org_id="default", kind="bench", dag=f"bench_{tag}_{start}", dag_version=1, params={},
            submitted_by="bench",
            tasks=[NewTask(JOB, f"e{i}", {"chunk": i}) for i in range(start, min(n, start + RUN_SIZE))],
        )


async def store_path(url: str, n: int, workers: int, batch: int) -> float:
    await reset_state(url)
    async with AsyncConnectionPool(url, min_size=workers, max_size=workers, open=False) as pool:
        store = TaskStore(pool, StaticJobCatalog({JOB.job: JOB}), lease=timedelta(seconds=60))
        await create_tasks(store, n)
        async with pool.connection() as conn:
            await conn.set_autocommit(True)
            await conn.execute("VACUUM ANALYZE state.tasks, state.runs, state.outbox")

        async def once(i: int) -> int:
            claimed = await store.claim(f"w{i}", limit=batch)
            if not claimed:
                return 0
            verdicts = await store.complete_many([Completion(c.task_id, c.attempt, "succeeded")
                                                  for c in claimed])
            return sum(1 for v in verdicts if v is Fence.OK)

        total, elapsed = await run_workers(workers, once)
    async with await psycopg.AsyncConnection.connect(url) as conn:
        row = await (await conn.execute("SELECT count(*) FILTER (WHERE state = 'succeeded'), count(*)"
                                        " FROM state.tasks")).fetchone()
        runs = await (await conn.execute("SELECT count(*) FROM state.runs WHERE state <> 'succeeded'")
                      ).fetchone()
    assert row == (n, n) and total == n, f"store: {total} completed, tasks {row}"
    assert runs == (0,), f"store: {runs} runs not settled"
    return total / elapsed


def scratch_database(server_url: str) -> tuple[str, str]:
    name = f"trace_bench_leases_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(server_url, dbname=name)
    migrate(url)
    return name, url


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


async def measure(url: str, args: argparse.Namespace) -> None:
    print(f"N={args.tasks} tasks, W={args.workers} workers, best of {args.repeat}")
    print(f"{'batch':>6} {'bare tasks/s':>14} {'store tasks/s':>14} {'store/bare':>11}")
    for batch in args.batch:
        b = max([await bare(url, args.tasks, args.workers, batch) for _ in range(args.repeat)])
        s = max([await store_path(url, args.tasks, args.workers, batch) for _ in range(args.repeat)])
        print(f"{batch:>6} {b:>14,.0f} {s:>14,.0f} {s / b:>11.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=20_000, help="N rows / tasks per measurement")
    parser.add_argument("--workers", type=int, default=4, help="W concurrent workers")
    parser.add_argument("--batch", type=int, nargs="+", default=[100, 500], help="claim batch sizes B")
    parser.add_argument("--repeat", type=int, default=2, help="measurements per figure (best is shown)")
    args = parser.parse_args()
    server_url = os.environ.get("TRACE_DATABASE_URL")
    spec = None
    if server_url is None:
        root = Path(tempfile.mkdtemp(prefix="trace-bench-leases-"))
        root.chmod(0o755)  # Postgres runs as an unprivileged uid and must reach its data dir
        (root / "run").mkdir(mode=0o700)
        os.environ.setdefault("XDG_RUNTIME_DIR", str(root / "run"))  # platformdirs wants one, 0700
        spec = PostgresSpec(data_dir=root / "pg", log_path=root / "pg.log", port=free_port())
        start_postgres(spec)
        server_url = spec.url
    name, url = scratch_database(server_url)
    try:
        asyncio.run(measure(url, args))
    finally:
        drop_database(server_url, name)
        if spec is not None:
            stop_postgres(spec.data_dir)


if __name__ == "__main__":
    main()
