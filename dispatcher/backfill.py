"""Backfill submissions: a block range becomes one run of the built-in ``backfill`` DAG.

The run starts with one task of the DAG's ``split`` job (``range_splitter``), whose payload's
event is the run's parameters (a :class:`~operators.range_splitter.SplitJob`); the chunk events
it emits create the ``ingest`` tasks (``cryo_ingest``), one per chunk. Chunk boundaries are
aligned to ``chunk_size`` and cut at the partition boundaries of the datasets' tables (see
:mod:`operators.range_splitter`), so a block always lands in the same file and every file lies in
one partition (the committer adds files to the tables as they are).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from dispatcher.api.models import BackfillRequest
from dispatcher.catalog import JobCatalog
from dispatcher.dag.store import ensure_builtin_dag
from dispatcher.runs import NewTask
from dispatcher.store import TaskStore
from operators.range_splitter import BadRange, SplitJob
from tracekit.errors import TraceError

DAG = "backfill"
SPLIT_JOB = "split"
INGEST_JOB = "ingest"
MAX_CHUNKS = 100_000  # per run: a million-block range in chunks of 10 blocks is a mistake, not a plan


class BackfillRefused(TraceError):
    """The backfill cannot run as asked (unknown chain, too many chunks, reused key...)."""


async def ensure_backfill_dag(database_url: str, org_id: str) -> int:
    """Deploy the built-in backfill DAG for ``org_id`` unless its active version is this one;
    returns the active version."""
    return await ensure_builtin_dag(database_url, DAG, org_id)


async def active_version(store: TaskStore, org_id: str) -> int:
    version = (await store.active_versions(org_id)).get(DAG)
    if version is None:
        raise BackfillRefused(f"the {DAG!r} DAG is not deployed for org {org_id!r} (or was retired)")
    return version


def backfill_job(body: BackfillRequest, chain: str) -> SplitJob:
    """The split task's job, which is also the run's parameters (what ``GET /v1/runs/{id}`` shows);
    refuses ranges of too many chunks."""
    try:
        return SplitJob.of_range(chain_id=body.chain_id, chain=chain, datasets=tuple(body.datasets),
                                 start_block=body.start_block, end_block=body.end_block,
                                 chunk_size=body.chunk_size, engine=body.engine, max_chunks=MAX_CHUNKS)
    except BadRange as exc:
        raise BackfillRefused(str(exc)) from exc


async def submit_backfill(store: TaskStore, catalog: JobCatalog, org_id: str, chains: Mapping[int, str],
                          body: BackfillRequest, *, submitted_by: str,
                          idempotency_key: str | None = None) -> tuple[uuid.UUID, bool]:
    """Create the run and its split task (and its wake-up) in one transaction.

    Returns ``(run_id, created)``; ``created`` is False when ``idempotency_key`` names a run made
    earlier with the same parameters. The same key with other parameters is refused.
    """
    if body.chain_id not in chains:
        served = ", ".join(str(c) for c in sorted(chains)) or "none"
        raise BackfillRefused(f"chain {body.chain_id} is not served here (chains: {served})")
    params = backfill_job(body, chains[body.chain_id]).model_dump(mode="json")
    version = await active_version(store, org_id)
    jobs = await catalog.jobs(org_id, DAG, version)
    split = jobs.get(SPLIT_JOB)
    if split is None or INGEST_JOB not in jobs:
        raise BackfillRefused(f"DAG {DAG!r} version {version} has no {SPLIT_JOB!r} and {INGEST_JOB!r} jobs")
    task = NewTask(split, f"backfill:{uuid.uuid4()}", {"event": params, "config": dict(split.config)})
    submitted = await store.submit_run(org_id=org_id, kind="backfill", dag=DAG, dag_version=version,
                                       params=params, submitted_by=submitted_by, tasks=[task],
                                       idempotency_key=idempotency_key)
    if not submitted.created and await store.run_params(submitted.run_id) != params:
        raise BackfillRefused(f"Idempotency-Key {idempotency_key!r} was used for another request"
                              f" (run {submitted.run_id}); use a new key")
    return submitted.run_id, submitted.created
