"""Rematerialization on deploy: a deploy that changes what derived jobs produce builds them (and
everything downstream) again as new versions, and cuts all of them over together once all are
built. Until then readers keep the previous versions: stale, but consistent with each other.

- **The plan** is made by the deploy, in its own transaction
  (:func:`dispatcher.dag.rematerialize.plan_rematerialization`): the derived jobs to build, in
  dependency order, as a ``state.rematerializations`` row (migration 0013).
- **The clock** (:class:`Rematerializer`, in the dispatcher with a warehouse) looks at every
  rematerialization still building, under an advisory lock (several dispatchers):
  :func:`progress` says, from the runs it started, which jobs may start (those whose upstream
  jobs are built), whether one failed, or whether all are built. A job's run reads its inputs at
  **pinned** versions (the run's params ``inputs``: ``{dataset: {version, snapshot_id, table}}``):
  the version this rematerialization built for a dataset an upstream job writes, else the
  dataset's current version. The run is of kind ``rematerialize``: the committer makes its
  versions ready without cutting them over (:func:`dispatcher.datasets.commit.commit_run`).
- **The cutover** of every built version is ONE pointer set, in the transaction that marks the
  rematerialization done and checks that its DAG version is still active
  (:meth:`DatasetStore.cutover_rematerialization`); then each table's ``main`` follows.
- A newer deploy of the DAG (or a rollback) supersedes it: its live runs are canceled and nothing
  of it is cut over. A failed run or commit fails it with the reason; nothing is cut over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg import AsyncCursor
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from pyiceberg.catalog import Catalog

from dispatcher import runs as run_rows
from dispatcher.catalog import JobPolicy, active_versions
from dispatcher.datasets.commit import REMATERIALIZE, follow_pointers
from dispatcher.datasets.store import DatasetStore
from dispatcher.store import TaskStore
from dispatcher.trigger_book import Firing
from tracekit.db.queries import load_queries

log = logging.getLogger("trace.dispatcher.rematerialize")

_SQL = load_queries("dispatcher.sql", "rematerialize.sql")
_SETS = load_queries("dispatcher.sql", "datasets.sql")
Cursor = AsyncCursor[dict[str, Any]]


# --------------------------------------------------------------------------- pure rules


@dataclass(frozen=True, slots=True)
class JobRun:
    """The run started for one job, with its commit."""

    run_id: str
    state: str  # the run's: queued, running, canceling, succeeded, failed, canceled
    commit_state: str | None  # pending, done, failed; None: no commit (the run staged no file)
    versions: Mapping[str, int] = field(default_factory=dict)  # done: dataset -> version made
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    start: tuple[str, ...] = ()  # jobs to start now
    built: Mapping[str, int] = field(default_factory=dict)  # dataset -> version, of the jobs done
    failed: str | None = None  # why the rematerialization failed
    complete: bool = False  # every job is built: cut over


def progress(jobs: Sequence[str], upstream: Mapping[str, Sequence[str]],
             runs: Mapping[str, JobRun]) -> Progress:
    """Where a rematerialization of ``jobs`` (in build order; ``upstream``: the jobs of ``jobs``
    each one reads from) stands, given the runs started for them."""
    built: dict[str, int] = {}
    done: set[str] = set()
    start: list[str] = []
    for job in jobs:
        run = runs.get(job)
        if run is None:
            if all(up in done for up in upstream.get(job, ())):
                start.append(job)
            continue
        if run.state in ("failed", "canceled"):
            why = f": {run.error}" if run.error else ""
            return Progress(built=built, failed=f"job {job}: run {run.run_id} ended {run.state}{why}")
        if run.state != "succeeded":
            continue
        if run.commit_state == "failed":
            return Progress(built=built,
                            failed=f"job {job}: the commit of run {run.run_id} failed: {run.error}")
        if run.commit_state is None:
            return Progress(built=built,
                            failed=f"job {job}: run {run.run_id} succeeded without staging a file")
        if run.commit_state == "done":
            built.update(run.versions)
            done.add(job)
    complete = len(done) == len(jobs)
    return Progress(start=tuple(start), built=built, complete=complete)


def upstream_jobs(jobs: Sequence[str], policies: Mapping[str, JobPolicy]) -> dict[str, tuple[str, ...]]:
    """For each job of ``jobs``, the jobs of ``jobs`` whose outputs it reads."""
    return {job: tuple(other for other in jobs if other != job
                       and set(policies[job].reads) & set(policies[other].writes)) for job in jobs}


def input_versions(reads: Sequence[str], rebuilt: Mapping[str, int], current: Mapping[str, int],
                   written_here: Sequence[str]) -> tuple[dict[str, int], str | None]:
    """The version of each dataset a job reads: the one this rematerialization built for a
    dataset one of its jobs writes (``written_here``), else the current one; and what is missing."""
    pinned = {}
    for dataset in reads:
        version = rebuilt.get(dataset) if dataset in written_here else current.get(dataset)
        if version is None:
            which = "built" if dataset in written_here else "current"
            return {}, f"it reads {dataset}, which has no {which} version"
        pinned[dataset] = version
    return pinned, None


# --------------------------------------------------------------------------- the clock


class Rematerializer:
    """Builds the rematerializations deploys record, and cuts each over once built (module doc)."""

    def __init__(self, pool: AsyncConnectionPool[Any], store: TaskStore, org_id: str, database_url: str,
                 open_catalog: Callable[[], Catalog], *, namespace: str, every_s: float = 1.0) -> None:
        self.pool = pool
        self.store = store
        self.org = org_id
        self.datasets = DatasetStore(database_url, org_id)
        self.namespace = namespace
        self.every_s = every_s
        self._open_catalog = open_catalog
        self._catalog: Catalog | None = None

    async def tick(self) -> list[uuid.UUID]:
        """Start the jobs that may start, end what failed or was superseded, and cut over what is
        built; returns the rematerializations cut over."""
        ready: list[uuid.UUID] = []
        async with self.pool.connection() as conn, conn.transaction(), \
                conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_SQL.sql("lock_rematerializer"), {"org": self.org})
            await cur.execute(_SQL.sql("building"), {"org": self.org})
            building = await cur.fetchall()
            if not building:
                return []
            active = await active_versions(cur, self.org)
            for row in building:
                if await self._advance(cur, row, active.get(row["dag"])):
                    ready.append(row["remat_id"])
        done = []
        for remat in ready:
            applied = await asyncio.to_thread(self.datasets.cutover_rematerialization, remat,
                                              actor="dispatcher")
            if applied is not None:
                log.info("rematerialization %s cut over (pointer set %d): %s", remat, applied.seq,
                         ", ".join(f"{d}={applied.pointers[d]}" for d in applied.changed))
                await asyncio.to_thread(self._follow)
                done.append(remat)
        return done

    async def _advance(self, cur: Cursor, row: Mapping[str, Any], active: int | None) -> bool:
        """One rematerialization's step; True when it is built and may be cut over."""
        remat, dag, version = row["remat_id"], row["dag"], row["dag_version"]
        started: dict[str, str] = dict(row["runs"])
        if active != version:
            await self._end(cur, remat, started, "superseded",
                            f"{dag} version {version} is no longer active (now {active})")
            return False
        policies = await self.store.catalog.jobs(self.org, dag, version)
        jobs = list(row["jobs"])
        missing = [job for job in jobs if job not in policies]
        if missing:
            await self._end(cur, remat, started, "failed", f"{dag} v{version} has no job {missing[0]}")
            return False
        await cur.execute(_SQL.sql("job_runs"), {"org": self.org, "runs": list(started.values())})
        found = {str(r["run_id"]): r for r in await cur.fetchall()}
        runs = {job: _job_run(run_id, found.get(run_id)) for job, run_id in started.items()}
        now = progress(jobs, upstream_jobs(jobs, policies), runs)
        if now.failed:
            await self._end(cur, remat, started, "failed", now.failed)
            return False
        written_here = [d for job in jobs for d in policies[job].writes]
        for job in now.start:
            failure = await self._start(cur, remat, dag, version, policies[job], now.built, written_here,
                                        started)
            if failure:
                await self._end(cur, remat, started, "failed", f"job {job}: {failure}")
                return False
        await cur.execute(_SQL.sql("save_progress"), {"remat": remat, "runs": Jsonb(started),
                                                      "built": Jsonb(dict(now.built))})
        return now.complete

    async def _start(self, cur: Cursor, remat: uuid.UUID, dag: str, version: int, job: JobPolicy,
                     built: Mapping[str, int], written_here: Sequence[str], started: dict[str, str]
                     ) -> str | None:
        """Start ``job``'s run with its inputs pinned; what stops it (None: started)."""
        await cur.execute(_SETS.sql("newest_set"), {"org": self.org})
        newest = await cur.fetchone()
        current = {k: int(v) for k, v in (newest["pointers"] if newest else {}).items()}
        pinned, missing = input_versions(job.reads, built, current, written_here)
        if missing:
            return missing
        datasets = sorted(pinned)
        await cur.execute(_SQL.sql("pin_versions"), {"org": self.org, "datasets": datasets,
                                                     "versions": [pinned[d] for d in datasets]})
        inputs = {r["dataset_id"]: {"version": int(r["version"]), "snapshot_id": r["snapshot_id"],
                                    "table": r["table_name"]} for r in await cur.fetchall()}
        unusable = sorted(d for d in datasets if d not in inputs or inputs[d]["snapshot_id"] is None)
        if unusable:
            return f"version {pinned[unusable[0]]} of {unusable[0]} has no snapshot to read"
        params = {"rematerialization": str(remat), "job": job.job, "inputs": inputs}
        key = f"remat:{remat}:{job.job}"
        submitted = await self.store.create_run_in(
            cur, org_id=self.org, kind=REMATERIALIZE, dag=dag, dag_version=version, params=params,
            submitted_by="rematerializer", firings=[Firing(job, key, None)], payload={"params": params},
            idempotency_key=key)
        started[job.job] = str(submitted.run_id)
        log.info("rematerialization %s: run %s builds %s (inputs %s)", remat, submitted.run_id, job.job,
                 ", ".join(f"{d}={pinned[d]}" for d in datasets))
        return None

    async def _end(self, cur: Cursor, remat: uuid.UUID, started: Mapping[str, str], state: str,
                   reason: str) -> None:
        """End it as failed or superseded: its live runs are canceled, nothing is cut over."""
        for run_id in started.values():
            await run_rows.cancel(cur, self.org, uuid.UUID(run_id))
        await cur.execute(_SQL.sql("finish"), {"remat": remat, "state": state, "reason": reason, "seq": None})
        level = logging.WARNING if state == "superseded" else logging.ERROR
        log.log(level, "rematerialization %s %s: %s", remat, state, reason)

    def _follow(self) -> None:
        if self._catalog is None:
            self._catalog = self._open_catalog()
        follow_pointers(self.datasets, self._catalog, namespace=self.namespace)

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: a tick every ``every_s``."""
        while not stop.is_set():
            try:
                await self.tick()
            except Exception as exc:  # the database is down, or a bug: log and look again later
                log.warning("rematerializer: %s", exc)
                self._catalog = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every_s)
        if self._catalog is not None:
            with contextlib.suppress(Exception):
                self._catalog.close()


def _job_run(run_id: str, row: Mapping[str, Any] | None) -> JobRun:
    if row is None:  # the run row is gone (it cascades only with its DAG version): count it failed
        return JobRun(run_id, "failed", None, error="the run no longer exists")
    versions = {k: int(v) for k, v in (row["versions"] or {}).items()}
    return JobRun(run_id, row["state"], row["commit_state"], versions,
                  row["last_error"] or row["task_errors"])
