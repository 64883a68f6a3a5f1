"""Garbage collection of datasets: expire old versions, delete the files no one needs.

One pass over an org (:func:`collect_garbage`, run by ``trace datasets gc`` and every
``gc_every_minutes`` by the dispatcher):

1. Under the org's pointer lock (no cutover or rollback comes between): read its pointer sets and
   versions, decide (:func:`~dispatcher.datasets.retention.plan_retention`), mark the versions to
   expire ``expired``, and expire each table's snapshots but those of the versions not expired
   (of any org sharing the table), main's and the heads of branches; the branch of an expired
   version that was never cut over is dropped first. The data files, manifests and manifest lists
   only removed snapshots used are deleted through the object store (never one an output of a run
   not yet committed or a kept version's manifest lists).
2. Staging: every key under ``_staging/`` is listed; the orphans
   (:func:`~dispatcher.datasets.retention.plan_staging`: this org's ended runs, referenced by no
   version's manifest, no Iceberg snapshot left and no run not yet committed, older than the
   retention) are deleted.

Every step is idempotent: a pass cut short is finished by the next (a version marked expired whose
snapshot is still there is expired again; files an interrupted pass did not delete become
orphans under ``_staging/``). ``dry`` decides the same and changes nothing. Postgres holds no lock
during the staging pass: only keys of runs that ended are candidates, and what references them is
read in one snapshot.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg.rows import dict_row
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from dispatcher.datasets.pointers import PointerSet, VersionState
from dispatcher.datasets.retention import (
    STAGING,
    Retention,
    StagingPlan,
    StagingRun,
    Version,
    plan_retention,
    plan_staging,
    staging_run,
)
from tracekit.db import connect
from tracekit.db.queries import load_queries
from tracekit.errors import CatalogError, CatalogUnavailable, ConfigError, ObjectStoreError
from tracekit.iceberg import DatasetTable, Expired
from tracekit.objects import ObjectStore, check_key

log = logging.getLogger("trace.dispatcher.gc")

_SQL = load_queries("dispatcher.sql", "gc.sql")
Cursor = psycopg.Cursor[dict[str, Any]]
ENDED = ("succeeded", "failed", "canceled")


@dataclass(frozen=True, slots=True)
class GcConfig:
    """What a pass keeps: the versions of the newest ``versions_kept`` pointer sets, staging files
    of runs ended less than ``staging_retention`` ago."""

    database_url: str
    org_id: str = "default"
    versions_kept: int = 5
    staging_retention: timedelta = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Deleted:
    """A file a pass deletes (or, dry, would delete)."""

    kind: str  # "data" | "metadata" | "staging"
    key: str  # in the object store
    size: int | None
    why: str


@dataclass(frozen=True)
class GcReport:
    dry: bool
    now: datetime
    retention: tuple[Retention, ...]
    deleted: tuple[Deleted, ...]
    outside: tuple[str, ...] = ()  # files to delete that are not in the object store: left
    staging: StagingPlan = field(default_factory=StagingPlan)

    @property
    def expired(self) -> list[tuple[str, int]]:
        return [(r.dataset_id, v) for r in self.retention for v in r.expire]


@dataclass(frozen=True, slots=True)
class _TableExpiry:
    table: str
    snapshots: frozenset[int]  # removed
    files: Expired


class _Keys:
    """Object URLs (``s3://bucket/prefix/key``, a file path or ``file://`` URL) -> keys of the store."""

    def __init__(self, store: ObjectStore) -> None:
        self.root = store.url("k")[:-1]

    def of(self, url: str) -> str | None:
        if url.startswith("file://"):
            url = unquote(urlsplit(url).path)
        if not url.startswith(self.root):
            return None
        try:
            return check_key(url[len(self.root):])
        except ObjectStoreError:
            return None


def _identifier(table_name: str) -> tuple[str, str]:
    namespace, _, name = table_name.rpartition(".")
    return namespace, name


def _open(catalog: Catalog, table_name: str) -> DatasetTable | None:
    """The dataset's table, None when it was never created."""
    identifier = _identifier(table_name)
    try:
        if not identifier[0] or not catalog.table_exists(identifier):
            return None
    except Exception as exc:  # the catalog's Postgres
        raise CatalogUnavailable(f"{table_name}: gc cannot reach the catalog ({exc})") from exc
    return DatasetTable(catalog, identifier)


def collect_garbage(config: GcConfig, catalog: Catalog, store: ObjectStore, *, now: datetime | None = None,
                    dry: bool = False) -> GcReport:
    """One gc pass over ``config.org_id``'s datasets (see the module). ``now`` (default: the
    database's clock) is when staging ages are measured."""
    keys = _Keys(store)
    with connect(config.database_url, autocommit=True) as conn, conn.cursor(row_factory=dict_row) as cur:
        plans, expiries = _expire(cur, conn, catalog, config, dry=dry)
        tables = sorted({e.table for e in expiries})
        listed = list(store.list(STAGING))
        refs = _read_references(conn, config.org_id, [(p.dataset_id, v) for p in plans for v in p.expire]
                                if dry else [], {run for key, _ in listed if (run := staging_run(key))})
    when = now or refs.now

    protected = {key for url in refs.protected if (key := keys.of(url)) is not None}
    sizes = dict(listed)
    deleted: list[Deleted] = []
    outside: list[str] = []
    for expiry in expiries:
        why = f"only expired snapshots of {expiry.table} used it"
        for kind, urls in (("data", expiry.files.data_files), ("metadata", expiry.files.metadata_files)):
            for url in urls:
                key = keys.of(url)
                if url in refs.protected or key in protected:
                    log.warning("gc: %s is still referenced; not deleted", url)
                elif key is None:
                    outside.append(url)
                else:
                    deleted.append(Deleted(kind, key, sizes.get(key), why))

    gone = {d.key for d in deleted}
    doomed = {e.table: e.snapshots for e in expiries} if dry else {}
    live = set()
    for table_name in tables:  # a run's files are only ever in its org's tables (maybe shared)
        live |= _live_files(catalog, table_name, doomed.get(table_name, frozenset()))
    referenced = protected | {key for url in live if (key := keys.of(url)) is not None}
    staging = plan_staging([(k, size) for k, size in listed if k not in gone], refs.runs, referenced,
                           org_id=config.org_id, now=when, retention=config.staging_retention)
    deleted += [Deleted("staging", o.key, o.size, f"orphan of run {o.run_id}, which ended {_age(o.age)} ago")
                for o in staging.delete]
    if not dry and deleted:
        store.delete([d.key for d in deleted])
    report = GcReport(dry, when, tuple(plans), tuple(deleted), tuple(outside), staging)
    if not dry and (report.expired or deleted):
        log.info("gc of %s: expired %s; deleted %d file(s)", config.org_id,
                 ", ".join(f"{d} v{v}" for d, v in report.expired) or "no version", len(deleted))
    return report


def _expire(cur: Cursor, conn: psycopg.Connection[Any], catalog: Catalog, config: GcConfig, *,
            dry: bool) -> tuple[list[Retention], list[_TableExpiry]]:
    """Decide, mark the versions to expire and expire each table, under the org's pointer lock
    (dry: decide and say what expiring would remove, without the lock)."""
    if not dry:
        cur.execute(_SQL.sql("lock_pointers"), {"org": config.org_id})
    try:
        plans, tables = _plan(cur, config)
        if not dry:
            with conn.transaction():
                for plan in (p for p in plans if p.expire):
                    cur.execute(_SQL.sql("mark_expired"), {"org": config.org_id, "dataset": plan.dataset_id,
                                                          "versions": list(plan.expire)})
        expiries = []
        for table_name in sorted(set(tables.values())):
            on_table = [p for p in plans if tables[p.dataset_id] == table_name]
            cur.execute(_SQL.sql("table_snapshots"), {"table": table_name})
            recorded = {int(r["snapshot_id"]) for r in cur.fetchall()}
            expiries.append(_expire_table(catalog, table_name, recorded, on_table, dry=dry))
        return plans, expiries
    finally:
        if not dry:
            cur.execute(_SQL.sql("unlock_pointers"), {"org": config.org_id})


def _plan(cur: Cursor, config: GcConfig) -> tuple[list[Retention], dict[str, str]]:
    """Each dataset's retention, and the table of each dataset."""
    try:
        cur.execute(_SQL.sql("org_datasets"), {"org": config.org_id})
    except psycopg.errors.UndefinedTable as exc:
        raise ConfigError("the dataset tables do not exist; run `trace db migrate`") from exc
    tables = {r["dataset_id"]: r["table_name"] for r in cur.fetchall()}
    cur.execute(_SQL.sql("pointer_sets"), {"org": config.org_id})
    sets = [PointerSet(int(r["seq"]), {k: int(v) for k, v in r["pointers"].items()}) for r in cur.fetchall()]
    cur.execute(_SQL.sql("org_versions"), {"org": config.org_id})
    versions: dict[str, list[Version]] = {}
    for r in cur.fetchall():
        versions.setdefault(r["dataset_id"], []).append(Version(
            int(r["version"]), VersionState(r["state"]),
            None if r["snapshot_id"] is None else int(r["snapshot_id"]), r["created_at"], r["finished_at"]))
    plans = [plan_retention(dataset, versions.get(dataset, []), sets, kept=config.versions_kept)
             for dataset in sorted(tables)]
    return plans, tables


def _expire_table(catalog: Catalog, table_name: str, recorded: set[int], plans: Sequence[Retention], *,
                  dry: bool) -> _TableExpiry:
    """Expire the snapshots of ``table_name`` that no version not expired records (``recorded``:
    those of every org sharing the table) but main's and the heads of branches; first drop the
    branches of expired versions (staged, never cut over). Dry: what it would remove."""
    table = _open(catalog, table_name)
    if table is None:
        return _TableExpiry(table_name, frozenset(), Expired())
    gone: dict[int, int] = {}
    kept: set[int] = set()
    for plan in plans:
        gone.update(plan.gone_snapshots)
        kept |= plan.keep_snapshots
    keep = (recorded - set(gone)) | kept
    dropped = {name for name, head in table.branches().items()
               if head in gone and name == f"v{gone[head]}"}
    if dry:
        return _predict(table, keep, dropped)
    for name in sorted(dropped):
        table.drop_branch(name)
    expired = table.expire(keep)
    return _TableExpiry(table_name, frozenset(expired.snapshots), expired)


def _predict(table: DatasetTable, keep: set[int], dropped: set[str]) -> _TableExpiry:
    """What :meth:`DatasetTable.expire` would remove after the ``dropped`` branches go."""
    loaded = table.table()
    every = {s.snapshot_id for s in loaded.snapshots()}
    heads = {ref.snapshot_id for name, ref in loaded.refs().items() if name not in dropped}
    retained = (keep | heads) & every
    doomed = every - retained
    if not doomed:
        return _TableExpiry(table.name, frozenset(), Expired())
    kept_data, kept_meta = _files_of(loaded, table.name, retained)
    doomed_data, doomed_meta = _files_of(loaded, table.name, doomed)
    return _TableExpiry(table.name, frozenset(doomed), Expired(tuple(sorted(doomed)),
                                                               tuple(sorted(doomed_data - kept_data)),
                                                               tuple(sorted(doomed_meta - kept_meta))))


def _files_of(loaded: Table, name: str, snapshot_ids: Iterable[int]) -> tuple[set[str], set[str]]:
    """The files (data and delete files) of the snapshots, and their manifest lists and manifests."""
    cache: dict[str, list[str]] = {}
    files: set[str] = set()
    metadata: set[str] = set()
    try:
        for snapshot_id in snapshot_ids:
            snapshot = loaded.snapshot_by_id(snapshot_id)
            if snapshot is None:
                continue
            metadata.add(snapshot.manifest_list)
            for manifest in snapshot.manifests(loaded.io):
                metadata.add(manifest.manifest_path)
                if manifest.manifest_path not in cache:
                    cache[manifest.manifest_path] = [
                        entry.data_file.file_path
                        for entry in manifest.fetch_manifest_entry(loaded.io, discard_deleted=True)]
                files.update(cache[manifest.manifest_path])
    except (OSError, ValueError) as exc:
        raise CatalogError(f"{name}: gc cannot read the snapshots' manifests: {exc}") from exc
    return files, metadata


def _live_files(catalog: Catalog, table_name: str, doomed: frozenset[int]) -> set[str]:
    """The data files of every snapshot of the table (but ``doomed``: a dry run's)."""
    table = _open(catalog, table_name)
    if table is None:
        return set()
    loaded = table.table()
    files, _ = _files_of(loaded, table.name, {s.snapshot_id for s in loaded.snapshots()} - doomed)
    return files


@dataclass(frozen=True)
class _References:
    """What may still need a file, read in one snapshot of the database."""

    protected: frozenset[str]  # URLs: outputs of runs not yet committed, manifests of versions kept
    runs: Mapping[uuid.UUID, StagingRun]
    now: datetime


def _read_references(conn: psycopg.Connection[Any], org: str, expiring: Sequence[tuple[str, int]],
                     runs: Iterable[uuid.UUID]) -> _References:
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cur.execute(_SQL.sql("now"))
        row = cur.fetchone()
        if row is None:  # pragma: no cover - SELECT without FROM returns a row
            raise ConfigError("the database has no clock")
        now: datetime = row["now"]
        cur.execute(_SQL.sql("uncommitted_outputs"))
        protected = {str(r["uri"]) for r in cur.fetchall()}
        cur.execute(_SQL.sql("manifest_files"), {"org": org, "datasets": [d for d, _ in expiring],
                                                 "versions": [v for _, v in expiring]})
        protected |= {str(r["uri"]) for r in cur.fetchall() if r["uri"] is not None}
        cur.execute(_SQL.sql("staging_runs"), {"runs": sorted(runs)})
        found = {uuid.UUID(str(r["run_id"])): StagingRun(r["org_id"], r["finished_at"] if r["state"] in ENDED
                                                         else None) for r in cur.fetchall()}
    return _References(frozenset(protected), found, now)


def _age(age: timedelta) -> str:
    hours = age.total_seconds() / 3600
    if hours >= 48:
        return f"{hours / 24:.1f} d"
    if hours >= 1:
        return f"{hours:.1f} h"
    return f"{age.total_seconds() / 60:.0f} min"
