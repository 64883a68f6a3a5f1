"""A finished run's staged files become dataset versions, then current: the commit protocol.

1. While a run goes on, each task's completion (fenced by its attempt) records the files that
   attempt staged (``state.task_outputs``). A stale attempt's files are never recorded, so they
   can never enter a snapshot; nothing is visible to readers yet.
2. Once the run succeeded, :func:`commit_run` (run from the outbox, so a crash only delays it)
   makes one version per dataset the run wrote: the files are added to an Iceberg snapshot on the
   version's own branch (``v<version>``), replacing the rows of the run's block range, so a range
   run again never duplicates rows; the version row records the snapshot and a manifest (files,
   rows, bytes, checksums, block range, tasks and attempts, producer).
3. The versions of all the run's datasets are cut over in ONE pointer set (readers switch at
   once), and each table's ``main`` follows (:func:`follow_pointers`), so an Iceberg reader
   (pyiceberg, Trino, Spark, DuckDB) sees every table at a committed version.

Every step is idempotent (a version found for the run is resumed, a cutover of current
versions is a no-op, ``set_main`` of the current snapshot too), so running it again after a
crash at any line finishes the job without a second version. :func:`plan_run_commit` is the pure
part: which files make which version.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyiceberg.catalog import Catalog

from dispatcher.datasets.pointers import VersionState
from dispatcher.datasets.store import Applied, DatasetStore
from tracekit.datasets import contract as dataset_contract
from tracekit.errors import TraceError
from tracekit.iceberg import DatasetTable, ensure_table

CHAIN_NAMESPACE = "chain"


class CommitRefused(TraceError):
    """The run's files cannot make a version (overlapping files, a run that did not succeed)."""


@dataclass(frozen=True, slots=True)
class StagedFile:
    """A file a task's attempt staged and its completion recorded."""

    dataset_id: str
    uri: str
    rows: int
    bytes: int
    task_id: str
    attempt: int
    block_start: int | None = None
    block_end: int | None = None
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class Build:
    """One version to make: a dataset's files, the block range it replaces, its manifest."""

    dataset_id: str
    files: tuple[StagedFile, ...]
    block_range: tuple[int, int] | None
    rows: int
    bytes: int

    def manifest(self) -> dict[str, Any]:
        return {"files": [{"uri": f.uri, "rows": f.rows, "bytes": f.bytes, "sha256": f.sha256,
                           "block_start": f.block_start, "block_end": f.block_end, "task_id": f.task_id,
                           "attempt": f.attempt} for f in self.files],
                "block_range": list(self.block_range) if self.block_range else None,
                "rows": self.rows, "bytes": self.bytes}


def plan_run_commit(files: Sequence[StagedFile], replace: tuple[int, int] | None) -> list[Build]:
    """One build per dataset, files in block order. ``replace`` is the block range the run
    covered (a backfill's range): its rows are replaced, also where the run wrote no file. Two
    files of one dataset covering the same blocks are refused (a second attempt's files of one
    task never both commit; this catches any that would)."""
    by_dataset: dict[str, list[StagedFile]] = {}
    for f in files:
        by_dataset.setdefault(f.dataset_id, []).append(f)
    builds = []
    for dataset, found in sorted(by_dataset.items()):
        ordered = sorted(found, key=lambda f: (f.block_start if f.block_start is not None else -1, f.uri))
        ranges = sorted((f.block_start, f.block_end, f.uri) for f in ordered
                        if f.block_start is not None and f.block_end is not None)
        for (_, end, uri), (start, _, next_uri) in itertools.pairwise(ranges):
            if start <= end:
                raise CommitRefused(f"{dataset}: files {uri} and {next_uri} overlap (blocks {start}..{end})")
        block_range = replace
        if block_range is None and ranges:
            block_range = (min(r[0] for r in ranges), max(r[1] for r in ranges))
        builds.append(Build(dataset, tuple(ordered), block_range, sum(f.rows for f in ordered),
                            sum(f.bytes for f in ordered)))
    return builds


@dataclass(frozen=True, slots=True)
class Committed:
    run_id: uuid.UUID
    versions: Mapping[str, int]
    applied: Applied


def commit_run(store: DatasetStore, catalog: Catalog, run_id: uuid.UUID, *,
               namespace: str = CHAIN_NAMESPACE,
               tables: Callable[[Catalog, str, str], DatasetTable] | None = None) -> Committed:
    """Make the versions of a succeeded run and cut them over together (idempotent)."""
    run = store.run(run_id)
    if run is None:
        raise CommitRefused(f"no run {run_id}")
    if run["state"] != "succeeded":
        raise CommitRefused(f"run {run_id} is {run['state']}: only a succeeded run commits")
    params = run["params"] or {}
    replace = None
    if isinstance(params.get("start_block"), int) and isinstance(params.get("end_block"), int):
        replace = (int(params["start_block"]), int(params["end_block"]))
    builds = plan_run_commit([StagedFile(**f) for f in store.run_outputs(run_id)], replace)
    open_table = tables or _chain_table
    versions: dict[str, int] = {}
    for build in builds:
        store.ensure_dataset(build.dataset_id, table_name=f"{namespace}.{build.dataset_id}", kind="chain")
        found = store.version_of_run(build.dataset_id, run_id)
        if found is not None and found[1] is VersionState.READY:
            versions[build.dataset_id] = found[0]
            continue
        version = found[0] if found is not None else store.begin_version(build.dataset_id, producer={
            "run_id": str(run_id), "dag": run["dag"], "dag_version": run["dag_version"], "kind": run["kind"],
            "tasks": sorted({f.task_id for f in build.files})})
        table = open_table(catalog, namespace, build.dataset_id)
        snapshot = table.stage([f.uri for f in build.files], branch=f"v{version}",
                               replace_block_range=build.block_range,
                               properties={"trace.run": str(run_id), "trace.version": str(version)})
        store.finish_version(build.dataset_id, version, state=VersionState.READY, snapshot_id=snapshot,
                             manifest=build.manifest(), block_range=build.block_range, rows=build.rows,
                             bytes_=build.bytes, files=len(build.files))
        versions[build.dataset_id] = version
    if not versions:
        return Committed(run_id, {}, Applied(store.pin().seq, (), store.pin().pointers))
    applied = store.cutover(versions, actor="dispatcher", reason=f"{run['kind']} run {run_id}")
    follow_pointers(store, catalog, namespace=namespace, tables=open_table)
    return Committed(run_id, versions, applied)


def follow_pointers(store: DatasetStore, catalog: Catalog, *, namespace: str = CHAIN_NAMESPACE,
                    tables: Callable[[Catalog, str, str], DatasetTable] | None = None) -> dict[str, int]:
    """Move each table's ``main`` to the snapshot of its dataset's current version (Postgres is
    the truth; Iceberg follows). Idempotent; run after every cutover and rollback, and at start.
    Returns ``{dataset: snapshot}`` as set."""
    open_table = tables or _chain_table
    pinned = store.pin()
    snapshots = store.snapshots(dict(pinned.pointers))
    for dataset, snapshot in sorted(snapshots.items()):
        open_table(catalog, namespace, dataset).set_main(snapshot)
    return snapshots


def _chain_table(catalog: Catalog, namespace: str, dataset: str) -> DatasetTable:
    return ensure_table(catalog, namespace, dataset_contract(dataset))
