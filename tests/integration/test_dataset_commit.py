"""The commit protocol end to end on Postgres and Iceberg, on SeaweedFS S3 and on a directory: a
run's fenced outputs become versions on branches, cut over together, read back by pyiceberg alone;
a stale attempt's file never enters a snapshot; a range run again has the same rows; a rollback
moves every table's main back."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pyarrow as pa
import pytest
from psycopg_pool import AsyncConnectionPool
from pyiceberg.catalog.sql import SqlCatalog

from dispatcher.catalog import JobPolicy, StaticJobCatalog
from dispatcher.completion import Completion, Output
from dispatcher.datasets.commit import CommitRefused, commit_run, follow_pointers, plan_run_commit
from dispatcher.datasets.commit import StagedFile as Staged
from dispatcher.datasets.store import DatasetStore
from dispatcher.lease import Fence, RetryPolicy
from dispatcher.runs import NewTask
from dispatcher.store import TaskStore
from tests.integration.test_iceberg import Place, blocks, expected, sorted_rows, write
from tests.integration.test_iceberg import place as place
from tracekit.iceberg import catalog_uri, s3_properties, warehouse_uri

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ONE_SECOND = timedelta(seconds=1)
INGEST = JobPolicy("ingest", "cryo_ingest", writes=("blocks",),
                   retry=RetryPolicy(max_attempts=3, initial=ONE_SECOND, maximum=ONE_SECOND))


async def _run(pg_url: str, org: str, place: Place, parts: dict[tuple[int, int], pa.Table],
               *, stale: pa.Table | None = None) -> uuid.UUID:
    """A run over the parts' whole range whose tasks each stage one part and complete; with
    ``stale``, one task's attempt is first reported by a stale attempt number (fenced out)."""
    start, end = min(r[0] for r in parts), max(r[1] for r in parts)
    tag = uuid.uuid4().hex[:8]  # task event ids are unique per (org, dag, job)
    async with AsyncConnectionPool(pg_url, min_size=1, max_size=4, open=False) as pool:
        tasks = TaskStore(pool, StaticJobCatalog({"ingest": INGEST}), lease=timedelta(seconds=30))
        run = await tasks.submit_run(org_id=org, kind="backfill", dag="backfill", dag_version=1,
                                     params={"start_block": start, "end_block": end}, submitted_by="t",
                                     tasks=[NewTask(INGEST, f"{tag}-chunk-{a}", {}) for a, _ in parts])
        leased = await tasks.claim("w", limit=len(parts), org_id=org)
        assert len(leased) == len(parts)
        for task, ((a, b), rows) in zip(sorted(leased, key=lambda t: t.task_id), sorted(parts.items()),
                                        strict=True):
            prefix = f"_staging/{run.run_id}/{task.task_id}.{task.attempt}"
            if stale is not None:
                url = write(place, f"{prefix}-stale/blocks.parquet", stale)
                late = Completion(task.task_id, task.attempt + 1, "succeeded",
                                  outputs=[Output("blocks", url, stale.num_rows, 1, a, b)])
                assert await tasks.complete(late) is not Fence.OK
                stale = None
            url = write(place, f"{prefix}/blocks__{a:08d}_to_{b:08d}.parquet", rows)
            done = Completion(task.task_id, task.attempt, "succeeded",
                              outputs=[Output("blocks", url, rows.num_rows, 1, a, b)])
            assert await tasks.complete(done) is Fence.OK
    return run.run_id


def _external_read(place: Place, pg_url: str, namespace: str) -> pa.Table:
    """The table as pyiceberg's own catalog API reads it: no Trace code."""
    properties = {"uri": catalog_uri(pg_url), "warehouse": warehouse_uri(place.warehouse)}
    if place.s3 is not None:
        properties |= s3_properties(place.s3)
    catalog = SqlCatalog("trace", **properties)  # the catalog name the tables are registered under
    try:
        return catalog.load_table((namespace, "blocks")).scan().to_arrow()
    finally:
        catalog.close()  # type: ignore[attr-defined]


async def test_a_run_commits_one_version_per_dataset_readable_by_pyiceberg_and_reruns_replace(
        place: Place, pg_url: str) -> None:
    org = f"c-{uuid.uuid4().hex[:8]}"
    store = DatasetStore(pg_url, org)
    first = {(0, 9): blocks(0, 9), (10, 19): blocks(10, 19)}
    run1 = await _run(pg_url, org, place, first, stale=blocks(0, 9, b"STALE"))
    committed = commit_run(store, place.catalog, run1, namespace=place.namespace)
    assert dict(committed.versions) == {"blocks": 1}
    assert dict(store.pin().pointers) == {"blocks": 1}
    assert sorted_rows(_external_read(place, pg_url, place.namespace)) == expected(*first.values())
    assert commit_run(store, place.catalog, run1, namespace=place.namespace).applied.seq == 1  # idempotent
    (version,) = store.versions("blocks")
    assert version["state"] == "ready" and version["row_count"] == 20 and version["file_count"] == 2
    assert (version["block_start"], version["block_end"]) == (0, 19)

    # the same range again, other data: replaces the rows, never duplicates them
    again = {(0, 9): blocks(0, 9, b"b"), (10, 19): blocks(10, 19, b"b")}
    run2 = await _run(pg_url, org, place, again)
    assert dict(commit_run(store, place.catalog, run2, namespace=place.namespace).versions) == {"blocks": 2}
    after = _external_read(place, pg_url, place.namespace)
    assert after.num_rows == 20 and sorted_rows(after) == expected(*again.values())
    assert b"STALE" not in b"".join(after.column("block_hash").to_pylist())

    store.rollback(actor="t")
    follow_pointers(store, place.catalog, namespace=place.namespace)
    assert sorted_rows(_external_read(place, pg_url, place.namespace)) == expected(*first.values())


async def test_only_a_succeeded_run_commits(place: Place, pg_url: str) -> None:
    org = f"c-{uuid.uuid4().hex[:8]}"
    store = DatasetStore(pg_url, org)
    with pytest.raises(CommitRefused, match="no run"):
        commit_run(store, place.catalog, uuid.uuid4(), namespace=place.namespace)
    async with AsyncConnectionPool(pg_url, min_size=1, max_size=2, open=False) as pool:
        tasks = TaskStore(pool, StaticJobCatalog({"ingest": INGEST}))
        run = await tasks.submit_run(org_id=org, kind="backfill", dag="backfill", dag_version=1, params={},
                                     submitted_by="t", tasks=[NewTask(INGEST, "e", {})])
    with pytest.raises(CommitRefused, match="is running: only a succeeded run commits"):
        commit_run(store, place.catalog, run.run_id, namespace=place.namespace)
    assert store.pin().seq == 0


def test_overlapping_files_of_one_dataset_are_refused() -> None:
    files = [Staged("blocks", "s3://d/a", 10, 1, "t1", 1, 0, 9),
             Staged("blocks", "s3://d/b", 10, 1, "t2", 1, 5, 14)]
    with pytest.raises(CommitRefused, match="overlap"):
        plan_run_commit(files, None)
    (build,) = plan_run_commit(files[:1], None)
    assert build.block_range == (0, 9) and build.rows == 10
