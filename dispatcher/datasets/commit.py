"""A finished run's staged files become dataset versions, then current: the commit protocol.

1. While a run goes on, each task's completion (fenced by its attempt) records the files that
   attempt staged (``state.task_outputs``). A stale attempt's files are never recorded, so they
   can never enter a snapshot; nothing is visible to readers yet.
2. Once the run succeeded, :func:`commit_run` (run from the outbox, so a crash only delays it)
   makes one version per dataset the run wrote: the files are added to an Iceberg snapshot on the
   version's own branch (``v<version>``), replacing the rows of the run's block range, so a range
   run again never duplicates rows; the version row records the snapshot and a manifest (files,
   rows, bytes, checksums, block range, tasks and attempts, producer).
3. Before any version is ``ready``, the integrity check reads the staged snapshots' rows of the
   run's range (:mod:`dispatcher.datasets.integrity`: contiguous blocks linked by their parent
   hashes, also to the blocks either side, unique keys, transaction counts, and the node's
   blocks at sampled heights). A problem fails every version of the run with the reason (their
   branches dropped); nothing is cut over and :class:`IntegrityFailed` says why.
4. The versions of all the run's datasets are cut over in ONE pointer set (readers switch at
   once; a run of the finalize DAG also moves the cold watermarks there:
   :mod:`dispatcher.datasets.finalize`), and each table's ``main`` follows
   (:func:`follow_pointers`), so an Iceberg reader (pyiceberg, Trino, Spark, DuckDB) sees every
   table at a committed version.

Every step is idempotent (a version found for the run is resumed, a cutover of current
versions is a no-op, ``set_main`` of the current snapshot too), so running it again after a
crash at any line finishes the job without a second version. :func:`plan_run_commit` is the pure
part: which files make which version.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from prometheus_client import Counter
from pyiceberg.catalog import Catalog
from pyiceberg.io.pyarrow import ArrowScan, PyArrowFileIO, schema_to_pyarrow
from pyiceberg.table import DataScan, FileScanTask
from pyiceberg.utils.concurrent import ExecutorFactory

from dispatcher.datasets.finalize import cold_watermarks
from dispatcher.datasets.integrity import (
    BLOCK,
    IntegrityConfig,
    Problem,
    check_node,
    check_range,
    columns_needed,
    reason,
    sample_heights,
)
from dispatcher.datasets.node import node_blocks
from dispatcher.datasets.pointers import VersionState
from dispatcher.datasets.store import Applied, DatasetStore
from tracekit.datasets import contract as dataset_contract
from tracekit.errors import TraceError
from tracekit.iceberg import DatasetTable, ensure_table

CHAIN_NAMESPACE = "chain"


def chain_namespace(org_id: str) -> str:
    """The Iceberg namespace of an org's chain datasets: ``chain`` for the default org, else
    ``<org>_chain`` (pointer sets are per org: two orgs never move one table's ``main``)."""
    if org_id == "default":
        return CHAIN_NAMESPACE
    return "".join(c if c.isalnum() else "_" for c in org_id.lower()) + "_" + CHAIN_NAMESPACE


class CommitRefused(TraceError):
    """The run's files cannot make a version (overlapping files, a run that did not succeed)."""


class IntegrityFailed(CommitRefused):
    """The run's versions failed the integrity check: they are failed, none was cut over."""


INTEGRITY_FAILURES = Counter("trace_dataset_integrity_failures_total",
                             "Versions refused by the integrity check, by dataset and check",
                             ["dataset", "check"])
log = logging.getLogger("trace.dispatcher.commit")


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


@dataclass(frozen=True, slots=True)
class _Staged:
    """A version of the run with its snapshot; ``ready`` when an earlier try finished it."""

    build: Build
    version: int
    snapshot: int
    ready: bool


def commit_run(store: DatasetStore, catalog: Catalog, run_id: uuid.UUID, *,
               namespace: str = CHAIN_NAMESPACE,
               tables: Callable[[Catalog, str, str], DatasetTable] | None = None,
               integrity: IntegrityConfig | None = None) -> Committed:
    """Make the versions of a succeeded run, check them, and cut them over together
    (idempotent). A failed check fails every version the run is making, cuts over none of them
    and raises :class:`IntegrityFailed` with the problems."""
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
    opened: dict[str, DatasetTable] = {}
    staged: dict[str, _Staged] = {}
    for build in builds:
        store.ensure_dataset(build.dataset_id, table_name=f"{namespace}.{build.dataset_id}", kind="chain")
        opened[build.dataset_id] = open_table(catalog, namespace, build.dataset_id)
        staged[build.dataset_id] = _stage(store, opened[build.dataset_id], build, run)
    if not staged:
        return Committed(run_id, {}, Applied(store.pin().seq, (), store.pin().pointers))
    problems = _check(staged, opened, params.get("chain_id"), integrity or IntegrityConfig())
    if problems:
        _refuse(store, staged, opened, problems, run_id)
    marks = cold_watermarks(run, store.pin().watermarks)  # empty unless a finalize run
    for made in staged.values():
        if not made.ready:
            build = made.build
            store.finish_version(build.dataset_id, made.version, state=VersionState.READY,
                                 snapshot_id=made.snapshot, manifest=build.manifest(),
                                 block_range=build.block_range, rows=build.rows, bytes_=build.bytes,
                                 files=len(build.files), cold_watermark=marks.get(build.dataset_id))
    versions = {dataset: made.version for dataset, made in staged.items()}
    applied = store.cutover(versions, actor="dispatcher", reason=f"{run['kind']} run {run_id}")
    follow_pointers(store, catalog, namespace=namespace, tables=open_table)
    return Committed(run_id, versions, applied)


def _stage(store: DatasetStore, table: DatasetTable, build: Build, run: Mapping[str, Any]) -> _Staged:
    """The run's version of ``build``'s dataset on its branch: resumed if an earlier try began it
    (or finished it), else a new one."""
    dataset = build.dataset_id
    found = store.version_of_run(dataset, run["run_id"])
    if found is not None and found[1] is VersionState.READY:
        return _Staged(build, found[0], store.snapshots({dataset: found[0]})[dataset], ready=True)
    if found is not None and found[1] is VersionState.BUILDING:
        version = found[0]
    else:
        version = store.begin_version(dataset, producer={
            "run_id": str(run["run_id"]), "dag": run["dag"], "dag_version": run["dag_version"],
            "kind": run["kind"], "tasks": sorted({f.task_id for f in build.files})})
    # a file without rows (a chunk without logs) has no partition value, so Iceberg cannot list
    # it (pyiceberg fails writing its manifest entry); the range it covers is replaced all the same
    snapshot = table.stage([f.uri for f in build.files if f.rows > 0], branch=f"v{version}",
                           replace_block_range=build.block_range,
                           properties={"trace.run": str(run["run_id"]), "trace.version": str(version)})
    return _Staged(build, version, snapshot, ready=False)


def _check(staged: Mapping[str, _Staged], tables: Mapping[str, DatasetTable], chain_id: object,
           config: IntegrityConfig) -> list[Problem]:
    """Read the staged snapshots' rows in the run's block range and check them: the blocks also
    one block either side, where the snapshot holds the version it continues (a staged snapshot
    starts from ``main``, the current version, with the range replaced). Every dataset's files
    are read at once, in parallel (:func:`_plan`, :func:`_read`)."""
    ranges = [made.build.block_range for made in staged.values() if made.build.block_range is not None]
    if not ranges:
        return []
    first, last = min(r[0] for r in ranges), max(r[1] for r in ranges)
    keys = {dataset: dataset_contract(dataset).unique_key for dataset in staged}
    plans = {dataset: _plan(tables[dataset], made.snapshot, *_span(dataset, first, last),
                            columns_needed(dataset, keys[dataset])) for dataset, made in staged.items()}
    jobs = [(plan, task) for plan in plans.values() for task in plan.tasks]
    parts = iter(ExecutorFactory.get_or_create().map(lambda job: _read(job[0], job[1], first, last), jobs))
    rows: dict[str, pa.Table] = {}
    neighbours = None
    for dataset, plan in plans.items():
        inside, outside = _joined(plan, [next(parts) for _ in plan.tasks])
        rows[dataset] = inside
        if dataset == "blocks":
            neighbours = outside
    problems = check_range(first, last, rows, keys, neighbours=neighbours)
    url = config.rpc_urls.get(chain_id) if isinstance(chain_id, int) else None
    if url is not None and config.samples > 0:
        seed = min(made.version for made in staged.values())  # a rerun of these versions samples the same
        heights = sample_heights(first, last, config.samples, seed=seed)
        problems += check_node(rows, node_blocks(url, heights, logs="logs" in rows))
    return problems


def _span(dataset: str, first: int, last: int) -> tuple[int, int]:
    """The blocks of ``dataset`` the check reads: ``blocks`` one either side of the range."""
    return (max(first - 1, 0), last + 1) if dataset == "blocks" else (first, last)


def _rows(table: DatasetTable, snapshot: int, first: int, last: int, columns: Sequence[str]) -> pa.Table:
    """``columns`` of the snapshot's rows of blocks ``first..last`` (only their files are read)."""
    plan = _plan(table, snapshot, first, last, columns)
    return _joined(plan, [_read(plan, task, first, last) for task in plan.tasks])[0]


@dataclass(frozen=True, slots=True)
class _Plan:
    """The data files of a snapshot that hold rows of blocks ``low..high``, as pyiceberg's scan of
    ``columns`` with that row filter plans them; ``io``: the files are read with pyarrow through
    it (None: by pyiceberg's own scan)."""

    scan: DataScan
    tasks: tuple[FileScanTask, ...]
    low: int
    high: int
    schema: pa.Schema  # the scan's projection, as pyiceberg reads it
    io: PyArrowFileIO | None


_PARQUET = ds.ParquetFileFormat(pre_buffer=True)


def _plan(table: DatasetTable, snapshot: int, low: int, high: int, columns: Sequence[str]) -> _Plan:
    scan = table.table().scan(snapshot_id=snapshot, selected_fields=tuple(columns),
                              row_filter=f"{BLOCK} >= {low} and {BLOCK} <= {high}")
    tasks = tuple(scan.plan_files())
    schema = schema_to_pyarrow(scan.projection(), include_field_ids=False)
    # pyarrow reads a file as pyiceberg would when no delete file removes rows of it
    io = scan.io if isinstance(scan.io, PyArrowFileIO) else None
    deletes = any(task.delete_files for task in tasks)
    return _Plan(scan, tasks, low, high, schema, None if deletes else io)


def _read(plan: _Plan, task: FileScanTask, first: int, last: int) -> tuple[pa.Table, pa.Table]:
    """One file's rows of blocks ``plan.low..plan.high``: those in ``first..last``, and the others.
    Read with pyarrow directly (only the plan's columns, row groups by their statistics, the file
    size from the manifest): pyiceberg's scan resolves each file's schema in Python, which cost
    more than reading the columns. A file whose columns pyiceberg would resolve otherwise than by
    their names (field ids in the file, a name mapped to another field) is read by pyiceberg."""
    scan = plan.scan
    names = plan.schema.names
    rows: pa.Table | None = None
    if plan.io is not None:
        scheme, netloc, path = PyArrowFileIO.parse_location(task.file.file_path, plan.io.properties)
        fragment = _PARQUET.make_fragment(path, filesystem=plan.io.fs_by_scheme(scheme, netloc),
                                          file_size=task.file.file_size_in_bytes)
        if _by_name(fragment.physical_schema, scan):
            rows = fragment.to_table(columns=names, filter=(ds.field(BLOCK) >= plan.low)
                                     & (ds.field(BLOCK) <= plan.high))
            wanted = pa.schema([f.with_type(_widened(f.type, plan.schema.field(f.name).type))
                                for f in rows.schema])
            if wanted != rows.schema:
                rows = rows.cast(wanted)
    if rows is None:
        rows = ArrowScan(scan.table_metadata, scan.io, scan.projection(), scan.row_filter,
                         scan.case_sensitive).to_table([task])
    numbers = rows[BLOCK]
    span = pc.min_max(numbers)
    if rows.num_rows == 0 or (first <= span["min"].as_py() and span["max"].as_py() <= last):
        return rows, rows.slice(0, 0)
    inside = pc.and_(pc.greater_equal(numbers, first), pc.less_equal(numbers, last))
    return rows.filter(inside), rows.filter(pc.invert(inside))


def _by_name(physical: pa.Schema, scan: DataScan) -> bool:
    """Whether pyiceberg would read each projected column from the file's column of its name:
    the file has no field ids, and the table's name mapping maps that name, and no other of the
    file's, to the column's field id."""
    if any(field.metadata and b"PARQUET:field_id" in field.metadata for field in physical):
        return False
    mapping = scan.table_metadata.name_mapping()
    if mapping is None:
        return False
    ids = {name: mapped.field_id for mapped in mapping for name in mapped.names}
    return all([name for name in physical.names if ids.get(name) == field.field_id] == [field.name]
               for field in scan.projection().fields)


def _widened(found: pa.DataType, wanted: pa.DataType) -> pa.DataType:
    """A file's number column is read as the table's (wider) type, as pyiceberg promotes it."""
    numbers = (pa.types.is_integer(found) and pa.types.is_integer(wanted)) or \
        (pa.types.is_floating(found) and pa.types.is_floating(wanted))
    return wanted if numbers else found


def _joined(plan: _Plan, parts: Sequence[tuple[pa.Table, pa.Table]]) -> tuple[pa.Table, pa.Table]:
    """The files' rows in block order of the plan (as pyiceberg's scan concatenates them): those
    of the range, and the others."""
    if not parts:
        return plan.schema.empty_table(), plan.schema.empty_table()
    return (pa.concat_tables([inside for inside, _ in parts], promote_options="permissive"),
            pa.concat_tables([outside for _, outside in parts], promote_options="permissive"))


def _refuse(store: DatasetStore, staged: Mapping[str, _Staged], tables: Mapping[str, DatasetTable],
            problems: Sequence[Problem], run_id: uuid.UUID) -> NoReturn:
    """Fail the versions the run is making (their branches dropped); none is cut over."""
    text = reason(problems)
    for dataset, made in sorted(staged.items()):
        if not made.ready:
            build = made.build
            store.finish_version(dataset, made.version, state=VersionState.FAILED, failure=text,
                                 manifest=build.manifest(), block_range=build.block_range, rows=build.rows,
                                 bytes_=build.bytes, files=len(build.files))
            tables[dataset].drop_branch(f"v{made.version}")
    for dataset, check in sorted({(p.dataset, p.check) for p in problems}):
        INTEGRITY_FAILURES.labels(dataset=dataset, check=check).inc()
    log.error("run %s: versions %s failed the integrity check, none cut over: %s", run_id,
              ", ".join(f"{d}={m.version}" for d, m in sorted(staged.items())), text)
    raise IntegrityFailed(f"integrity check failed: {text}")


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
