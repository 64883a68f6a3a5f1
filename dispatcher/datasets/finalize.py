"""Finalization, hot -> cold: the finalizer starts one run of the built-in ``finalize`` DAG per batch;
a committed batch moves the cold watermark; hot rows below it (minus an overlap) are then pruned.

- **The clock** (:class:`Finalizer`, every ``every_s`` in the dispatcher with a warehouse): under an
  advisory lock (several dispatchers), when no finalize run is live or waiting for its commit (runs
  are serial, so watermarks only move forward over contiguous blocks), it plans the next batch
  (:func:`operators.aggregator.next_batches`: a whole aligned range of ``batch_blocks`` blocks,
  past the finality depth, after the cold watermark) and starts a run of ``dispatcher/dags/
  finalize.yaml`` whose params are the batch (``chain_id``, ``chain``, ``start_block``,
  ``end_block``): its ``aggregate`` task (the ``aggregator`` operator) stages the batch's files. After
  a failed run or a refused commit it waits ``retry_after_s`` and plans the same batch again.
- **The watermark**: the commit (:func:`~dispatcher.datasets.commit.commit_run`) replaces exactly
  the run's range and, for a finalize run, finishes each version with the cold watermark it
  leaves (:func:`cold_watermarks`), which the cutover stores with the pointer set.
- **Pruning** (:func:`prune_current`): hot rows of blocks below ``watermark - overlap_blocks`` are
  deleted, reading the watermark from the newest pointer set only: never before the cold version
  is current. The committer runs it after committing a finalize run (:func:`after_commit`); the
  clock runs it too, so a crash in between only delays it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from dispatcher.catalog import active_versions
from dispatcher.dag.store import ensure_builtin_dag
from dispatcher.datasets.store import DatasetStore
from dispatcher.store import TaskStore
from dispatcher.trigger_book import Firing
from operators.aggregator import DATASETS, Batch, advance, next_batches, prune_below
from tracekit.db import connect
from tracekit.db.queries import load_queries

log = logging.getLogger("trace.dispatcher.finalize")

DAG = "finalize"
KIND = "finalize"
_SQL = load_queries("dispatcher.sql", "finalize.sql")
_SETS = load_queries("dispatcher.sql", "datasets.sql")


@dataclass(frozen=True, slots=True)
class FinalizeConfig:
    """Finalization of one chain (the dispatcher's CLI builds it from ``TRACE_FINALIZE_*``)."""

    chain_id: int
    chain: str  # its name in file names
    finality_depth: int = 10
    batch_blocks: int = 10_000
    overlap_blocks: int = 100
    every_s: float = 5.0
    retry_after_s: float = 30.0  # after a failed run or a refused commit


async def ensure_finalize_dag(database_url: str, org_id: str) -> int:
    """Deploy the built-in finalize DAG for ``org_id`` unless its active version is this one;
    returns the active version."""
    return await ensure_builtin_dag(database_url, DAG, org_id)


# --------------------------------------------------------------------------- pure rules


def watermark_of(watermarks: Mapping[str, int]) -> int | None:
    """The cold watermark of finalization: the lowest of its datasets' (None: none has one)."""
    marks = [watermarks[d] for d in DATASETS if d in watermarks]
    return min(marks) if marks else None


def batch_of_run(run: Mapping[str, Any]) -> Batch | None:
    """The batch a run of the finalize DAG carries in its params (None: another run)."""
    params = run.get("params") or {}
    start, end = params.get("start_block"), params.get("end_block")
    if run.get("dag") != DAG or not isinstance(start, int) or not isinstance(end, int):
        return None
    return Batch(start, end)


def cold_watermarks(run: Mapping[str, Any], current: Mapping[str, int]) -> dict[str, int]:
    """For a run of the finalize DAG, each dataset's cold watermark once the run's batch is current
    (:func:`operators.aggregator.advance` of the watermark ``current`` holds); empty for other runs."""
    batch = batch_of_run(run)
    if batch is None:
        return {}
    return {dataset: advance(current.get(dataset), batch) for dataset in DATASETS}


def waiting(newest: Mapping[str, Any] | None, now: dt.datetime, retry_after: dt.timedelta) -> str | None:
    """Why no batch may start now (None: one may), from the newest finalize run and its commit."""
    if newest is None:
        return None
    if newest["state"] in ("running", "canceling"):
        return f"run {newest['run_id']} is {newest['state']}"
    if newest["state"] == "succeeded" and newest["commit_state"] == "pending":
        return f"run {newest['run_id']} waits for its commit"
    failed = newest["state"] in ("failed", "canceled") or newest["commit_state"] == "failed"
    ended = newest["committed_at"] if newest["commit_state"] == "failed" else newest["finished_at"]
    if failed and ended is not None and now - ended < retry_after:
        return (f"run {newest['run_id']} ended {newest['state']} (commit {newest['commit_state']}); "
                "tried again later")
    return None


# --------------------------------------------------------------------------- pruning


def prune(database_url: str, chain_id: int, below: int) -> dict[str, int]:
    """Delete the hot rows of ``chain_id``'s blocks below ``below``, in one transaction; the rows
    deleted per table."""
    deleted = {}
    with connect(database_url) as conn, conn.transaction(), conn.cursor() as cur:
        for table in DATASETS:
            cur.execute(_SQL.sql(f"prune_{table}"), {"chain": chain_id, "below": below})
            deleted[table] = cur.rowcount
    return deleted


def prune_current(store: DatasetStore, chain_id: int, overlap_blocks: int) -> dict[str, int]:
    """:func:`prune` below the current pointer set's cold watermark minus ``overlap_blocks``."""
    below = prune_below(watermark_of(store.pin().watermarks), overlap_blocks)
    if below is None:
        return {}
    deleted = prune(store.url, chain_id, below)
    if any(deleted.values()):
        log.info("pruned hot rows of chain %s below block %d: %s", chain_id, below,
                 ", ".join(f"{t} {n}" for t, n in deleted.items()))
    return deleted


def after_commit(store: DatasetStore, run_id: uuid.UUID, overlap_blocks: int) -> dict[str, int]:
    """After ``run_id`` was committed and cut over: a finalize run's chain is pruned."""
    run = store.run(run_id)
    if run is None or batch_of_run(run) is None:
        return {}
    return prune_current(store, int(run["params"]["chain_id"]), overlap_blocks)


# --------------------------------------------------------------------------- the clock


class Finalizer:
    """Starts the finalize DAG's runs, one batch at a time, and prunes (see the module doc)."""

    def __init__(self, pool: AsyncConnectionPool[Any], store: TaskStore, org_id: str, database_url: str,
                 config: FinalizeConfig) -> None:
        self.pool = pool
        self.store = store
        self.org = org_id
        self.config = config
        self.datasets = DatasetStore(database_url, org_id)

    async def tick(self, now: dt.datetime | None = None) -> uuid.UUID | None:
        """Start the next batch's run if one is due; its id (None: none started)."""
        c = self.config
        when = now or dt.datetime.now(dt.UTC)
        async with self.pool.connection() as conn, conn.transaction(), \
                conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_SQL.sql("lock_finalizer"), {"org": self.org})
            await cur.execute(_SQL.sql("newest_run"), {"org": self.org, "dag": DAG})
            reason = waiting(await cur.fetchone(), when, dt.timedelta(seconds=c.retry_after_s))
            if reason is not None:
                return None
            await cur.execute(_SETS.sql("newest_set"), {"org": self.org})
            pointers = await cur.fetchone()
            mark = watermark_of({k: int(v) for k, v in pointers["watermarks"].items()} if pointers else {})
            await cur.execute(_SQL.sql("hot_span"), {"chain": c.chain_id})
            span = await cur.fetchone()
            tail, head = (span["tail"], span["head"]) if span else (None, None)
            batches = next_batches(mark, head, finality_depth=c.finality_depth, batch_blocks=c.batch_blocks,
                                   hot_tail=tail)
            if not batches:
                return None
            version = (await active_versions(cur, self.org)).get(DAG)
            if version is None:
                log.warning("finalizer: the %r DAG is not deployed for org %r", DAG, self.org)
                return None
            jobs = await self.store.triggers.manual_jobs(self.org, DAG, version)
            batch = batches[0]
            params = {"chain_id": c.chain_id, "chain": c.chain, "start_block": batch.start,
                      "end_block": batch.end}
            event = f"finalize:{c.chain_id}:{batch.start}-{batch.end}:{uuid.uuid4()}"
            submitted = await self.store.create_run_in(
                cur, org_id=self.org, kind=KIND, dag=DAG, dag_version=version, params=params,
                submitted_by="finalizer", firings=[Firing(job, event, None) for job in jobs],
                payload={"params": params})
        log.info("finalizer: run %s finalizes %s of chain %s (cold watermark %s, hot head %s)",
                 submitted.run_id, batch, c.chain_id, mark, head)
        return submitted.run_id

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: a tick and a prune every ``every_s``."""
        while not stop.is_set():
            try:
                await self.tick()
                await asyncio.to_thread(prune_current, self.datasets, self.config.chain_id,
                                        self.config.overlap_blocks)
            except Exception as exc:  # the database is down, or a bug: log and look again later
                log.warning("finalizer: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.every_s)
