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
import pyarrow.parquet as pq
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
from tracekit import __version__
from tracekit.datasets import PARTITION_COLUMN, derived_contract, load_contracts
from tracekit.datasets import contract as dataset_contract
from tracekit.errors import TraceError
from tracekit.iceberg import DatasetTable, ensure_table, read_schema

CHAIN_NAMESPACE = "chain"
DERIVED_NAMESPACE = "derived"
REMATERIALIZE = "rematerialize"  # the kind of a rematerialization's runs
CODE_VERSION = f"trace {__version__}"


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
    job: str | None = None  # the job of the task
    metadata: Mapping[str, Any] | None = None  # the operator's own


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
                           "attempt": f.attempt, **({"metadata": dict(f.metadata)} if f.metadata else {})}
                          for f in self.files],
                "block_range": list(self.block_range) if self.block_range else None,
                "rows": self.rows, "bytes": self.bytes}

    def metadata(self) -> dict[str, Any]:
        """The operator metadata of the version: its files' merged in block order (a key two files
        give different values keeps the later; each file's own stays in the manifest)."""
        merged: dict[str, Any] = {}
        for f in self.files:
            merged.update(f.metadata or {})
        return merged


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
    and raises :class:`IntegrityFailed` with the problems. A run of a rematerialization leaves its
    versions ready without cutting them over (the rematerializer cuts all its jobs' versions over
    at once: :mod:`dispatcher.datasets.rematerialize`). A run that read a dataset it also writes
    (a compaction) is refused once that dataset's current version is no longer the one it read."""
    run = store.run(run_id)
    if run is None:
        raise CommitRefused(f"no run {run_id}")
    if run["state"] != "succeeded":
        raise CommitRefused(f"run {run_id} is {run['state']}: only a succeeded run commits")
    params = run["params"] or {}
    rebuild = run["kind"] == REMATERIALIZE
    replace = None
    start, end = params.get("start_block"), params.get("end_block")
    if not rebuild and isinstance(start, int) and isinstance(end, int):
        replace = (start, end)
    inputs = pinned_inputs(params)
    builds = plan_run_commit([StagedFile(**f) for f in store.run_outputs(run_id)], replace)
    stale = stale_inputs([b.dataset_id for b in builds], inputs, store.pin().pointers)
    if stale:
        raise CommitRefused(stale)
    writes = store.job_outputs(run["dag"], run["dag_version"]) if builds else {}
    opened: dict[str, DatasetTable] = {}
    staged: dict[str, _Staged] = {}
    for build in builds:
        chain = is_chain_dataset(build.dataset_id)
        space = namespace if chain else derived_namespace(namespace)
        name = build.dataset_id if chain else derived_table_name(build.dataset_id)
        store.ensure_dataset(build.dataset_id, table_name=f"{space}.{name}",
                             kind="chain" if chain else "derived")
        if chain:
            opened[build.dataset_id] = (tables or _chain_table)(catalog, namespace, build.dataset_id)
        else:
            opened[build.dataset_id] = _derived_table(catalog, space, build, writes.get(build.dataset_id, {}))
        everything = rebuild or _replaces(chain, writes.get(build.dataset_id))
        staged[build.dataset_id] = _stage(store, opened[build.dataset_id], build, run, inputs,
                                          replace_all=everything)
    if not staged:
        return Committed(run_id, {}, Applied(store.pin().seq, (), store.pin().pointers))
    chain_staged = {d: made for d, made in staged.items() if is_chain_dataset(d)}
    problems = _check(chain_staged, opened, params.get("chain_id"), integrity or IntegrityConfig()) \
        if chain_staged else []
    problems += _check_derived({d: made for d, made in staged.items() if d not in chain_staged}, opened,
                               writes)
    if problems:
        _refuse(store, staged, opened, problems, run_id)
    marks = cold_watermarks(run, store.pin().watermarks)  # empty unless a finalize run
    for made in staged.values():
        if not made.ready:
            build = made.build
            store.finish_version(build.dataset_id, made.version, state=VersionState.READY,
                                 snapshot_id=made.snapshot, manifest=build.manifest(),
                                 block_range=build.block_range, rows=build.rows, bytes_=build.bytes,
                                 files=len(build.files), cold_watermark=marks.get(build.dataset_id),
                                 metadata=build.metadata())
    versions = {dataset: made.version for dataset, made in staged.items()}
    if rebuild:  # the rematerializer cuts over when every job of it is built
        pinned = store.pin()
        return Committed(run_id, versions, Applied(pinned.seq, (), pinned.pointers))
    applied = store.cutover(versions, actor="dispatcher", reason=f"{run['kind']} run {run_id}")
    follow_pointers(store, catalog, namespace=namespace, tables=tables)
    return Committed(run_id, versions, applied)


def _replaces(chain: bool, write: Mapping[str, Any] | None) -> bool:
    """Whether a run's version of a dataset replaces all its rows: a derived dataset written in
    ``replace`` mode (a chain dataset's run replaces its block range; ``append`` adds rows, its
    unique key checked)."""
    return not chain and (write or {}).get("mode") == "replace"


def pinned_inputs(params: Mapping[str, Any]) -> dict[str, int]:
    """The dataset versions a run read, from its params' ``inputs`` (``{dataset: {"version": v,
    ...}}`` as the dispatcher pinned them at the run's start; a bare ``{dataset: v}`` too)."""
    found = params.get("inputs")
    if not isinstance(found, Mapping):
        return {}
    pinned = {}
    for dataset, pin in found.items():
        version = pin.get("version") if isinstance(pin, Mapping) else pin
        if isinstance(version, int) and not isinstance(version, bool):
            pinned[str(dataset)] = version
    return pinned


def stale_inputs(writes: Sequence[str], inputs: Mapping[str, int], current: Mapping[str, int]) -> str | None:
    """Why a run that read a dataset it writes may not commit (None: it may): the version it read
    must still be the current one, or its new version would undo the versions made since (a
    compaction of version 4 committed over version 5 would bring version 4's rows back)."""
    for dataset in sorted(set(writes) & set(inputs)):
        if current.get(dataset) != inputs[dataset]:
            return (f"{dataset}: the run read version {inputs[dataset]}, but version "
                    f"{current.get(dataset)} is current now; run it again on the current version")
    return None


def _stage(store: DatasetStore, table: DatasetTable, build: Build, run: Mapping[str, Any],
           inputs: Mapping[str, int], *, replace_all: bool = False) -> _Staged:
    """The run's version of ``build``'s dataset on its branch: resumed if an earlier try began it
    (or finished it), else a new one (its producer and the input versions the run read recorded)."""
    dataset = build.dataset_id
    found = store.version_of_run(dataset, run["run_id"])
    if found is not None and found[1] is VersionState.READY:
        return _Staged(build, found[0], store.snapshots({dataset: found[0]})[dataset], ready=True)
    if found is not None and found[1] is VersionState.BUILDING:
        version = found[0]
    else:
        version = store.begin_version(dataset, producer=producer_of(run, build), inputs=inputs)
    # a file without rows (a chunk without logs) has no partition value, so Iceberg cannot list
    # it (pyiceberg fails writing its manifest entry); the range it covers is replaced all the same
    snapshot = table.stage([f.uri for f in build.files if f.rows > 0], branch=f"v{version}",
                           replace_block_range=None if replace_all else build.block_range,
                           replace_all=replace_all,
                           properties={"trace.run": str(run["run_id"]), "trace.version": str(version)})
    return _Staged(build, version, snapshot, ready=False)


def producer_of(run: Mapping[str, Any], build: Build) -> dict[str, Any]:
    """What made a version: the run, its DAG version and kind, the job(s) and tasks that wrote the
    files, when the run started and ended, and the code that committed it."""
    started, finished = run.get("created_at"), run.get("finished_at")
    return {
        "run_id": str(run["run_id"]), "dag": run["dag"], "dag_version": run["dag_version"],
        "kind": run["kind"], "jobs": sorted({f.job for f in build.files if f.job}),
        "tasks": sorted({f.task_id for f in build.files}),
        "run_started_at": started.isoformat() if started else None,
        "run_finished_at": finished.isoformat() if finished else None,
        "run_seconds": round((finished - started).total_seconds(), 3) if started and finished else None,
        "code_version": CODE_VERSION,
    }


def _check_derived(staged: Mapping[str, _Staged], tables: Mapping[str, DatasetTable],
                   writes: Mapping[str, Mapping[str, Any]]) -> list[Problem]:
    """A derived dataset's check: its unique key (from the job's write spec) holds in the whole
    staged snapshot (no block range to check links in)."""
    rows: dict[str, pa.Table] = {}
    keys: dict[str, Sequence[str]] = {}
    for dataset, made in staged.items():
        key = list((writes.get(dataset) or {}).get("unique_key") or ())
        if key:
            keys[dataset] = key
            rows[dataset] = tables[dataset].table().scan(snapshot_id=made.snapshot,
                                                         selected_fields=tuple(key)).to_arrow()
    return check_range(0, 0, rows, keys) if rows else []


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
    Read with pyarrow (:func:`_read_direct`), or by pyiceberg's scan when pyarrow would not read
    it as pyiceberg does."""
    rows = _read_direct(plan, plan.io, task) if plan.io is not None else None
    if rows is None:
        scan = plan.scan
        rows = ArrowScan(scan.table_metadata, scan.io, scan.projection(), scan.row_filter,
                         scan.case_sensitive).to_table([task])
    numbers = rows[BLOCK]
    if _between(numbers, first, last):
        return rows, rows.slice(0, 0)
    inside = pc.and_(pc.greater_equal(numbers, first), pc.less_equal(numbers, last))
    return rows.filter(inside), rows.filter(pc.invert(inside))


def _read_direct(plan: _Plan, io: PyArrowFileIO, task: FileScanTask) -> pa.Table | None:
    """The file's rows of blocks ``plan.low..plan.high``, ``plan``'s columns, read with pyarrow:
    only the row groups whose statistics overlap the blocks, the file's size from the manifest
    (no request for it), the whole file in one read when the columns are most of it (as the
    ``blocks`` columns are: one request instead of two or three). pyiceberg's scan resolved every
    file's schema in Python, which cost more than reading the columns. None when pyiceberg would
    resolve the columns otherwise than by their names (field ids in the file, a name mapped to
    another field): that file is read by pyiceberg."""
    scheme, netloc, path = PyArrowFileIO.parse_location(task.file.file_path, io.properties)
    fragment = _PARQUET.make_fragment(path, filesystem=io.fs_by_scheme(scheme, netloc),
                                      file_size=task.file.file_size_in_bytes)
    with fragment.open() as stream:
        source = pa.BufferReader(stream.read_buffer()) if _mostly_read(plan, task) else stream
        with pq.ParquetFile(source, pre_buffer=True) as parquet:
            if not _by_name(parquet.schema_arrow, plan.scan):
                return None
            groups = _row_groups(parquet.metadata, plan.low, plan.high)
            rows = parquet.read_row_groups(groups, columns=plan.schema.names)
    numbers = rows[BLOCK]
    if not _between(numbers, plan.low, plan.high):  # the scan's row filter
        rows = rows.filter(pc.and_(pc.greater_equal(numbers, plan.low), pc.less_equal(numbers, plan.high)))
    wanted = pa.schema([f.with_type(_widened(f.type, plan.schema.field(f.name).type)) for f in rows.schema])
    return rows if wanted == rows.schema else rows.cast(wanted)


def _between(numbers: pa.ChunkedArray, low: int, high: int) -> bool:
    """Whether every number is in ``low..high`` (none null)."""
    if numbers.null_count:
        return False
    span = pc.min_max(numbers)
    return len(numbers) == 0 or bool(low <= span["min"].as_py() and span["max"].as_py() <= high)


def _mostly_read(plan: _Plan, task: FileScanTask) -> bool:
    """Whether the plan's columns are at least half of the file (by the manifest's column sizes)."""
    sizes = task.file.column_sizes or {}
    ids = [field.field_id for field in plan.scan.projection().fields]
    return all(i in sizes for i in ids) and 2 * sum(sizes[i] for i in ids) >= task.file.file_size_in_bytes


def _row_groups(metadata: pq.FileMetaData, low: int, high: int) -> list[int]:
    """The row groups whose block number statistics overlap ``low..high`` (all without them)."""
    column = next((j for j in range(metadata.num_columns) if metadata.schema.column(j).path == BLOCK), None)
    groups = []
    for i in range(metadata.num_row_groups):
        stats = metadata.row_group(i).column(column).statistics if column is not None else None
        if stats is not None and stats.has_min_max and (stats.max < low or stats.min > high):
            continue
        groups.append(i)
    return groups


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
    Returns ``{dataset: snapshot}`` as set. Each dataset's table is the one it was registered
    with (``namespace``: where a dataset registered without one lives)."""
    pinned = store.pin()
    snapshots = store.snapshots(dict(pinned.pointers))
    names = store.table_names()
    for dataset, snapshot in sorted(snapshots.items()):
        space, _, name = names.get(dataset, f"{namespace}.{dataset}").rpartition(".")
        if tables is not None and is_chain_dataset(dataset):
            table = tables(catalog, space, name)
        else:
            table = DatasetTable(catalog, (space, name))
        table.set_main(snapshot)
    return snapshots


def is_chain_dataset(dataset: str) -> bool:
    """A dataset with a contract in ``schemas/datasets`` (the chain's); any other is derived."""
    return dataset in load_contracts()


def derived_namespace(chain_space: str) -> str:
    """The Iceberg namespace of an org's derived datasets, beside its chain namespace."""
    return chain_space.removesuffix(CHAIN_NAMESPACE) + DERIVED_NAMESPACE


def _chain_table(catalog: Catalog, namespace: str, dataset: str) -> DatasetTable:
    return ensure_table(catalog, namespace, dataset_contract(dataset))


def _derived_table(catalog: Catalog, namespace: str, build: Build, write: Mapping[str, Any]) -> DatasetTable:
    """A derived dataset's table, its contract taken from the schema of the run's first file and
    the job's write spec (created, or evolved when the change is compatible: an incompatible one
    is refused naming the column)."""
    with_rows = [f for f in build.files if f.rows > 0] or list(build.files)
    schema = read_schema(catalog, with_rows[0].uri)
    key = tuple((write or {}).get("unique_key") or ())
    # the key's uniqueness is checked at every commit (``_check_derived``); the columns keep the
    # nullability the operator wrote (a SQL result's columns are nullable); a table partitioned by
    # block range is sorted by block number first
    sort = key if PARTITION_COLUMN not in schema.names else ()
    contract = derived_contract(derived_table_name(build.dataset_id), schema, sort=sort)
    return ensure_table(catalog, namespace, contract)


def derived_table_name(dataset_id: str) -> str:
    """The Iceberg table name of a derived dataset: its id in lower case, every character but
    letters and digits an underscore (``monad.daily-volume`` -> ``monad_daily_volume``)."""
    name = "".join(c if c.isascii() and c.isalnum() else "_" for c in dataset_id.lower())
    return name if name[:1].isalpha() else f"d_{name}"
