"""Compaction: the small files of a partition of a chain dataset rewritten as one file, as the
dataset's next version with the same rows.

Backfills in small chunks and finalization batches leave many files in a partition of a table
(``truncate[W](block_number)``). :func:`plan_compaction` reads the current version's files from its
snapshot's manifests and picks the partitions with at least ``min_files`` files (or checks the
one a user names: aligned, with rows). :func:`start_compaction` starts a run of the built-in
``compact`` DAG (``dispatcher/dags/compact.yaml``, :func:`ensure_compact_dag`) for one of them:
its ``parquet_compact`` task reads the partition at the pinned snapshot and stages one sorted file;
the run's params (:func:`run_params`) make the ordinary commit path
(:func:`~dispatcher.datasets.commit.commit_run`) replace the blocks the partition's files cover,
run the integrity check and cut the new version over. The params pin the version read
(``inputs``): the commit refuses the run once that version is no longer current, so a compaction
never reverts a newer version.

One partition at a time: every compaction of a dataset reads its current version, and once one
is committed the others' inputs are stale. :func:`compact_next` starts the run of the first
partition to compact (asking again before it is committed returns the same run: the idempotency
key is the dataset, the partition and the version read); ``trace datasets compact`` waits for its
commit (:func:`wait_commit`) and asks for the next, until none is left.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from psycopg.rows import dict_row
from pyiceberg.catalog import Catalog

from dispatcher.dag.store import ensure_builtin_dag
from dispatcher.datasets.store import DatasetNotFound, DatasetStore
from dispatcher.runs import Submitted
from dispatcher.store import TaskStore
from dispatcher.trigger_book import Firing
from operators.parquet_compact import (
    Partition,
    partition_at,
    partition_range,
    partitions,
    snapshot_files,
    to_compact,
)
from tracekit.datasets import contract
from tracekit.db import connect
from tracekit.db.queries import load_queries
from tracekit.errors import ConfigError, TraceError
from tracekit.iceberg import DatasetTable

DAG = "compact"
KIND = "compact"
CHAIN_DATASETS = ("blocks", "transactions", "logs", "traces", "transfers", "stake_changes")
"""What the compact DAG writes: the chain datasets (a derived dataset has no block partitions)."""
_SQL = load_queries("dispatcher.sql", "compact.sql")


class CompactRefused(ConfigError):
    """A compaction asked of something that cannot be compacted (not a chain dataset...)."""


class CompactUnavailable(TraceError):
    """The dispatcher cannot compact now (no warehouse, the compact DAG is not deployed)."""


async def ensure_compact_dag(database_url: str, org_id: str) -> int:
    """Deploy the built-in compact DAG for ``org_id`` unless its active version is this one;
    returns the active version."""
    return await ensure_builtin_dag(database_url, DAG, org_id)


@dataclass(frozen=True, slots=True)
class Plan:
    """What to compact of ``dataset``'s current version (``version``, None: it has none): the
    partitions to compact, in block order (``chosen``), of those it has (``partitions``)."""

    dataset: str
    min_files: int
    version: int | None = None
    table: str | None = None
    snapshot_id: int | None = None
    partitions: tuple[Partition, ...] = ()
    chosen: tuple[Partition, ...] = ()
    asked: int | None = None  # the partition a user named (its first block)

    def nothing(self) -> str:
        """Why nothing is to be compacted (when ``chosen`` is empty)."""
        if self.version is None:
            return f"nothing to compact: {self.dataset} has no current version"
        if self.asked is not None:
            (part,) = [p for p in self.partitions if p.start == self.asked]
            return (f"nothing to compact: {part} of {self.dataset} version {self.version} has "
                    f"{len(part.files)} file(s), fewer than --min-files {self.min_files}")
        most = max((len(p.files) for p in self.partitions), default=0)
        return (f"nothing to compact: no partition of {self.dataset} version {self.version} has "
                f"{self.min_files} files or more ({len(self.partitions)} partition(s), at most {most} "
                "file(s) each)")


def plan_compaction(store: DatasetStore, catalog: Catalog, dataset: str, *, partition: int | None = None,
                    min_files: int = 2, after: int | None = None) -> Plan:
    """Which partitions of ``dataset``'s current version have at least ``min_files`` files (only
    ``partition``, the first block of one, when given; only those starting after block ``after``,
    when given: a caller going through them in order). An unknown dataset is a
    :class:`DatasetNotFound`; a dataset that is not a chain dataset, a partition not aligned to the
    contract's width or without rows, a :class:`CompactRefused` / ``BadPartition`` (ConfigErrors);
    nothing is written."""
    if isinstance(min_files, bool) or not isinstance(min_files, int) or min_files < 1:
        raise CompactRefused(f"--min-files is a positive integer, got {min_files!r}")
    found = {row["dataset_id"]: row for row in store.datasets()}
    row = found.get(dataset)
    if row is None:
        known = ", ".join(sorted(found)) or "none"
        raise DatasetNotFound(f"no dataset {dataset!r} in org {store.org!r} (its datasets: {known})")
    if row["kind"] != "chain" or dataset not in CHAIN_DATASETS:
        raise CompactRefused(f"{dataset} is a {row['kind']} dataset; only the chain datasets "
                             f"({', '.join(CHAIN_DATASETS)}) are compacted")
    width = contract(dataset).partition_width
    span = partition_range(partition, width) if partition is not None else None
    version = store.pin().pointers.get(dataset)
    if version is None:
        return Plan(dataset, min_files, asked=partition)
    snapshot = store.snapshots({dataset: version}).get(dataset)
    if snapshot is None:
        raise CompactRefused(f"{dataset} version {version} has no Iceberg snapshot")
    table_name = str(row["table_name"])
    namespace, _, name = table_name.partition(".")
    table = DatasetTable(catalog, (namespace, name)).table()
    files = snapshot_files(table, snapshot, width, first=span[0] if span else None,
                           last=span[1] if span else None)
    parts = partitions(files, width)
    if partition is not None:
        parts = [partition_at(parts, partition, width, what=f"{dataset} version {version}")]
    chosen = [p for p in to_compact(parts, min_files) if after is None or p.start > after]
    return Plan(dataset, min_files, version, table_name, snapshot, tuple(parts), tuple(chosen), partition)


def run_params(plan: Plan, part: Partition, *, chain_id: int | None, chain: str | None) -> dict[str, Any]:
    """A compaction run's params: the blocks the partition's files cover (the range the commit
    replaces), the chain, and the version read (``inputs``, checked at commit)."""
    if plan.version is None or plan.table is None or plan.snapshot_id is None:
        raise CompactRefused(f"{plan.dataset} has no current version to compact")
    params: dict[str, Any] = {"dataset": plan.dataset, "start_block": part.first_block,
                              "end_block": part.last_block}
    if chain_id is not None:
        params["chain_id"] = chain_id
    if chain is not None:
        params["chain"] = chain
    params["inputs"] = {plan.dataset: {"version": plan.version, "table": plan.table,
                                       "snapshot_id": plan.snapshot_id}}
    return params


def idempotency_key(plan: Plan, part: Partition) -> str:
    """One run per (dataset, partition, version read)."""
    return f"compact:{plan.dataset}:{part.start}:v{plan.version}"


async def start_compaction(tasks: TaskStore, org_id: str, plan: Plan, part: Partition, *,
                           chain_id: int | None, chain: str | None, submitted_by: str) -> Submitted:
    """The run compacting ``part`` of the plan's version (created, or the one made before for the
    same dataset, partition and version)."""
    params = run_params(plan, part, chain_id=chain_id, chain=chain)
    version = (await tasks.active_versions(org_id)).get(DAG)
    if version is None:
        raise CompactUnavailable(f"the {DAG!r} DAG is not deployed for org {org_id!r} (the dispatcher "
                                 "deploys it at start when it has a warehouse)")
    jobs = await tasks.triggers.manual_jobs(org_id, DAG, version)
    if not jobs:
        raise CompactUnavailable(f"the {DAG!r} DAG version {version} has no job with a manual trigger")
    key = idempotency_key(plan, part)
    async with tasks.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        return await tasks.create_run_in(
            cur, org_id=org_id, kind=KIND, dag=DAG, dag_version=version, params=params,
            submitted_by=submitted_by, firings=[Firing(job, key, None) for job in jobs],
            payload={"params": params}, idempotency_key=key)


@dataclass(frozen=True, slots=True)
class Started:
    """What :func:`compact_next` did: the plan, and the run of its first partition (None: nothing
    to compact); ``created`` False when the run was made before."""

    plan: Plan
    run_id: uuid.UUID | None = None
    created: bool = False
    remaining: tuple[Partition, ...] = field(default=())

    @property
    def partition(self) -> Partition | None:
        return self.plan.chosen[0] if self.plan.chosen else None


async def compact_next(tasks: TaskStore, store: DatasetStore, open_catalog: Callable[[], Catalog],
                       dataset: str, *, partition: int | None = None, min_files: int = 2,
                       after: int | None = None, chain_id: int | None = None, chain: str | None = None,
                       submitted_by: str) -> Started:
    """Plan the compaction of ``dataset`` (of ``store``'s org) and start the run of its first
    partition to compact (see :func:`plan_compaction`)."""

    def plan() -> Plan:
        catalog = open_catalog()
        try:
            return plan_compaction(store, catalog, dataset, partition=partition, min_files=min_files,
                                   after=after)
        finally:
            catalog.close()

    planned = await asyncio.to_thread(plan)
    if not planned.chosen:
        return Started(planned)
    first = planned.chosen[0]
    submitted = await start_compaction(tasks, store.org, planned, first, chain_id=chain_id, chain=chain,
                                       submitted_by=submitted_by)
    return Started(planned, submitted.run_id, submitted.created, planned.chosen[1:])


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a compaction run ended: its state, and its commit's (None: no commit)."""

    state: str
    commit_state: str | None = None
    error: str | None = None
    versions: dict[str, int] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        if self.state in ("failed", "canceled"):
            return True
        return self.state == "succeeded" and self.commit_state != "pending"

    @property
    def committed(self) -> bool:
        return self.state == "succeeded" and self.commit_state == "done"


def run_outcome(database_url: str, org_id: str, run_id: uuid.UUID) -> Outcome:
    with connect(database_url) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_SQL.sql("run_outcome"), {"org": org_id, "run": run_id})
        row = cur.fetchone()
    if row is None:
        raise TraceError(f"no run {run_id} in org {org_id!r}")
    state, commit = row["state"], row["commit_state"]
    error = row["task_error"] if state in ("failed", "canceled") else \
        row["commit_error"] if commit == "failed" else None
    return Outcome(state, commit, error, {k: int(v) for k, v in (row["versions"] or {}).items()})


def wait_commit(database_url: str, org_id: str, run_id: uuid.UUID, *, poll_s: float = 0.5,
                sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """Wait until the run has ended and the dispatcher's committer is done with its files."""
    while True:
        outcome = run_outcome(database_url, org_id, run_id)
        if outcome.finished:
            return outcome
        sleep(poll_s)
