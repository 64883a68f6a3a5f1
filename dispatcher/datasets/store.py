"""Dataset versions and pointer sets in Postgres: register, begin and finish versions; cut over,
roll back, pin.

Every change is one transaction. Cutovers and rollbacks of an org take its pointer lock, then (a
rollback) its DAG deploy lock, so they are serial; readers take no lock at all: :meth:`pin` reads
the newest pointer set, one row. The rules are :mod:`dispatcher.datasets.pointers`; the SQL is
``dispatcher/sql/datasets.sql``; the tables are migration ``0010_dataset_versions.sql``.

A store keeps one connection and runs its transactions on it one after another (a commit of a run
makes about ten: a connect each cost more than the queries); a call made while another thread's
transaction holds it gets a connection of its own. The kept connection is replaced when it broke,
idled longer than :data:`IDLE_S`, or fails to begin a transaction (the server dropped it).
:meth:`DatasetStore.close` closes it (``with DatasetStore(...) as store:``); a store that is
garbage-collected closes it too.
"""

from __future__ import annotations

import threading
import time
import uuid
import weakref
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from dispatcher.dag.store import activate_in, lock_deploys, retire_in, stored_version
from dispatcher.datasets.pointers import (
    EMPTY,
    Candidate,
    Change,
    PointerSet,
    RollbackRefused,
    VersionNotFound,
    VersionState,
    plan_cutover,
    plan_rollback,
    rolled_back_dags,
)
from dispatcher.metrics import CUTOVER_SECONDS
from tracekit.db import connect
from tracekit.db.queries import load_queries
from tracekit.db.transactions import transaction
from tracekit.errors import ConfigError, TraceError

_SQL = load_queries("dispatcher.sql", "datasets.sql")
_RUNS = load_queries("dispatcher.sql", "runs.sql")
_REMAT = load_queries("dispatcher.sql", "rematerialize.sql")
Cursor = psycopg.Cursor[dict[str, Any]]
TABLES = "the dataset tables"
IDLE_S = 30.0  # a kept connection idle longer is replaced (the server or a proxy may have dropped it)


class DatasetNotFound(ConfigError):
    """No such dataset."""


@dataclass(frozen=True, slots=True)
class Applied:
    """A pointer set written by a cutover or a rollback."""

    seq: int
    changed: tuple[str, ...]
    pointers: Mapping[str, int]
    restores: int | None = None
    canceled_runs: int = 0  # rollback: live runs of the rolled-back DAG versions, now canceled
    dags_restored: Mapping[str, int | None] = field(default_factory=dict)  # dag -> version active now


class _Kept:
    """The connection a store keeps between its transactions (shared with its finalizer, which
    closes it when the store is collected: never the store itself, or it would never be)."""

    def __init__(self) -> None:
        self.conn: psycopg.Connection[Any] | None = None
        self.used = 0.0  # time.monotonic() at the end of its last transaction
        self.lock = threading.Lock()

    def connection(self, url: str) -> tuple[psycopg.Connection[Any], bool]:
        """The kept connection and True, or a new one (kept from now on) and False."""
        conn = self.conn
        fresh = time.monotonic() - self.used <= IDLE_S
        if conn is not None and not conn.closed and not conn.broken and fresh:
            return conn, True
        self.close()
        self.conn = connect(url, autocommit=True)
        return self.conn, False

    def after(self) -> None:
        self.used = time.monotonic()
        if self.conn is not None and (self.conn.closed or self.conn.broken):
            self.close()

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with suppress(psycopg.Error):
                conn.close()


def _set(row: Mapping[str, Any] | None) -> PointerSet:
    if row is None:
        return EMPTY
    return PointerSet(int(row["seq"]), {k: int(v) for k, v in row["pointers"].items()},
                      {k: int(v) for k, v in row["watermarks"].items()},
                      {k: int(v) for k, v in row["dag_versions"].items()})


def _newest(cur: Cursor, org: str) -> PointerSet:
    cur.execute(_SQL.sql("newest_set"), {"org": org})
    return _set(cur.fetchone())


def _write(cur: Cursor, org: str, newest: PointerSet, change: Change, action: str, actor: str,
           reason: str) -> int:
    seq = newest.seq + 1
    cur.execute(_SQL.sql("insert_set"), {
        "org": org, "seq": seq, "pointers": Jsonb(dict(change.pointers)),
        "watermarks": Jsonb(dict(change.watermarks)), "dag_versions": Jsonb(dict(change.dag_versions)),
        "action": action, "changed": list(change.changed), "restores": change.restores, "actor": actor,
        "reason": reason,
    })
    return seq


class DatasetStore:
    def __init__(self, database_url: str, org_id: str) -> None:
        self.url = database_url
        self.org = org_id
        self._kept = _Kept()
        self._finalizer = weakref.finalize(self, self._kept.close)

    def close(self) -> None:
        """Close the kept connection (the store stays usable: the next call opens one)."""
        with self._kept.lock:
            self._kept.close()

    def __enter__(self) -> DatasetStore:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[Cursor]:
        """One transaction on the kept connection, or on one of its own while another thread's
        transaction holds it. A kept connection that fails to begin (dropped by the server while
        idle: nothing but ``BEGIN`` was sent) is replaced and the transaction begun again."""
        kept = self._kept
        if not kept.lock.acquire(blocking=False):
            with transaction(self.url, tables=TABLES) as cur:
                yield cur
            return
        try:
            with ExitStack() as stack:
                stack.callback(kept.after)
                conn, reused = kept.connection(self.url)
                try:
                    cur = stack.enter_context(transaction(conn, tables=TABLES))
                except psycopg.OperationalError:
                    if not reused:
                        raise
                    kept.close()
                    conn, _ = kept.connection(self.url)
                    cur = stack.enter_context(transaction(conn, tables=TABLES))
                yield cur
        finally:
            kept.lock.release()

    # -- datasets and versions ----------------------------------------------------------------

    def ensure_dataset(self, dataset_id: str, *, table_name: str, kind: str = "derived",
                       description: str = "") -> None:
        with self._transaction() as cur:
            cur.execute(_SQL.sql("ensure_dataset"), {"org": self.org, "dataset": dataset_id, "kind": kind,
                                                     "table": table_name, "description": description})

    def begin_version(self, dataset_id: str, *, producer: Mapping[str, Any] | None = None,
                      inputs: Mapping[str, int] | None = None,
                      metadata: Mapping[str, Any] | None = None) -> int:
        """A new version of the dataset, ``building``, based on the version current now."""
        with self._transaction() as cur:
            cur.execute(_SQL.sql("lock_dataset"), {"org": self.org, "dataset": dataset_id})
            if cur.fetchone() is None:
                raise DatasetNotFound(f"no dataset {dataset_id!r} in org {self.org!r}")
            based_on = _newest(cur, self.org).pointers.get(dataset_id)
            cur.execute(_SQL.sql("new_version"), {
                "org": self.org, "dataset": dataset_id, "based_on": based_on,
                "producer": Jsonb(dict(producer or {})), "inputs": Jsonb(dict(inputs or {})),
                "metadata": Jsonb(dict(metadata or {})),
            })
            row = cur.fetchone()
            if row is None:  # pragma: no cover - INSERT ... SELECT always returns its row
                raise TraceError(f"no version number for {dataset_id}")
            return int(row["version"])

    def finish_version(self, dataset_id: str, version: int, *, state: VersionState,
                       failure: str | None = None, snapshot_id: int | None = None,
                       manifest: Mapping[str, Any] | None = None, block_range: tuple[int, int] | None = None,
                       cold_watermark: int | None = None, rows: int | None = None, bytes_: int | None = None,
                       files: int | None = None, metadata: Mapping[str, Any] | None = None) -> None:
        """End a ``building`` version as ready, failed or abandoned (with what it holds)."""
        if state in (VersionState.BUILDING, VersionState.EXPIRED):
            raise ValueError("a version is finished as ready, failed or abandoned")
        with self._transaction() as cur:
            cur.execute(_SQL.sql("finish_version"), {
                "org": self.org, "dataset": dataset_id, "version": version, "state": state.value,
                "failure": failure, "snapshot_id": snapshot_id,
                "manifest": None if manifest is None else Jsonb(dict(manifest)),
                "block_start": block_range[0] if block_range else None,
                "block_end": block_range[1] if block_range else None, "cold_watermark": cold_watermark,
                "rows": rows, "bytes": bytes_, "files": files,
                "metadata": None if metadata is None else Jsonb(dict(metadata)),
            })
            if cur.fetchone() is None:
                raise TraceError(f"{dataset_id} version {version} is not building (or does not exist)")

    # -- pointer sets -------------------------------------------------------------------------

    def pin(self) -> PointerSet:
        """The pointer set readers see now (one row: never half of a cutover)."""
        with self._transaction() as cur:
            return _newest(cur, self.org)

    def cutover(self, versions: Mapping[str, int], *, actor: str, reason: str = "") -> Applied:
        """Move the pointers of ``versions`` (dataset -> version) at once, in one transaction."""
        with CUTOVER_SECONDS.labels("cutover").time(), self._transaction() as cur:
            return self._cutover(cur, versions, actor, reason)

    def cutover_rematerialization(self, remat_id: uuid.UUID, *, actor: str) -> Applied | None:
        """Cut over every version a rematerialization built, in one transaction that also marks it
        done; None (nothing changed) when it is no longer building or its DAG version is no
        longer active (a deploy or a rollback superseded it)."""
        with CUTOVER_SECONDS.labels("cutover").time(), self._transaction() as cur:
            cur.execute(_SQL.sql("lock_pointers"), {"org": self.org})
            cur.execute(_REMAT.sql("lock_one"), {"org": self.org, "remat": remat_id})
            row = cur.fetchone()
            if row is None or row["state"] != "building" or not row["active"]:
                return None
            built = {d: int(v) for d, v in row["built"].items()}
            applied = self._cutover(cur, built, actor,
                                    f"rematerialization {remat_id} of {row['dag']} v{row['dag_version']}")
            cur.execute(_REMAT.sql("finish"), {"remat": remat_id, "state": "done", "reason": None,
                                               "seq": applied.seq})
            return applied

    def _cutover(self, cur: Cursor, versions: Mapping[str, int], actor: str, reason: str) -> Applied:
        cur.execute(_SQL.sql("lock_pointers"), {"org": self.org})
        newest = _newest(cur, self.org)
        datasets = sorted(versions)
        cur.execute(_SQL.sql("candidates"), {"org": self.org, "datasets": datasets,
                                             "versions": [versions[d] for d in datasets]})
        found = {(r["dataset_id"], int(r["version"])): Candidate(
            r["dataset_id"], int(r["version"]), VersionState(r["state"]), r["failure"],
            None if r["cold_watermark"] is None else int(r["cold_watermark"])) for r in cur.fetchall()}
        cur.execute(_SQL.sql("active_dags"), {"org": self.org})
        dags = {r["dag"]: int(r["version"]) for r in cur.fetchall()}
        change = plan_cutover(newest, versions, found, dags)
        if not change.changed and change.watermarks == newest.watermarks:
            return Applied(newest.seq, (), newest.pointers)  # already current: a retry
        seq = _write(cur, self.org, newest, change, "cutover", actor, reason)
        return Applied(seq, change.changed, change.pointers)

    def rollback(self, *, to_seq: int | None = None, actor: str, reason: str = "") -> Applied:
        """Restore an earlier pointer set (default: the one before the newest) with the DAG
        versions active then; cancel the live runs of the DAG versions rolled back."""
        with CUTOVER_SECONDS.labels("rollback").time(), self._transaction() as cur:
            cur.execute(_SQL.sql("lock_pointers"), {"org": self.org})
            lock_deploys(cur, self.org)
            newest = _newest(cur, self.org)
            wanted = newest.seq - 1 if to_seq is None else to_seq
            target: PointerSet | None = EMPTY if wanted == 0 else None
            if wanted > 0:
                cur.execute(_SQL.sql("set_at"), {"org": self.org, "seq": wanted})
                row = cur.fetchone()
                target = None if row is None else _set(row)
            change = plan_rollback(newest, target, to_seq=to_seq, expired=self._expired(cur, target))
            restored: dict[str, int | None] = {}
            canceled = 0
            for dag, bad_version in sorted(rolled_back_dags(newest, change).items()):
                good = change.dag_versions.get(dag)
                if good is None:
                    retire_in(cur, self.org, dag)
                else:
                    spec = stored_version(cur, self.org, dag, good)
                    if spec is None:
                        raise RollbackRefused(f"dag {dag!r} has no version {good} to restore")
                    activate_in(cur, self.org, dag, good, spec)
                restored[dag] = good
                canceled += self._cancel_runs(cur, dag, bad_version)
            seq = _write(cur, self.org, newest, change, "rollback", actor, reason)
            return Applied(seq, change.changed, change.pointers, change.restores, canceled, restored)

    def _expired(self, cur: Cursor, target: PointerSet | None) -> set[tuple[str, int]]:
        """The versions ``target`` names that retention expired (a rollback to it is refused)."""
        if target is None or not target.pointers:
            return set()
        datasets = sorted(target.pointers)
        cur.execute(_SQL.sql("candidates"), {"org": self.org, "datasets": datasets,
                                             "versions": [target.pointers[d] for d in datasets]})
        return {(r["dataset_id"], int(r["version"])) for r in cur.fetchall()
                if r["state"] == VersionState.EXPIRED.value}

    def _cancel_runs(self, cur: Cursor, dag: str, version: int) -> int:
        """Cancel the live runs of ``dag`` ``version`` (queued tasks end, leased ones are told at
        their next heartbeat), locking tasks before runs as completion does."""
        cur.execute(_SQL.sql("live_runs_of_dag_version"), {"org": self.org, "dag": dag, "version": version})
        runs = [r["run_id"] for r in cur.fetchall()]
        for run_id in runs:
            cur.execute(_RUNS.sql("lock_live_tasks"), (run_id, self.org))
            cur.execute(_RUNS.sql("lock_run"), (self.org, run_id))
            cur.execute(_RUNS.sql("mark_canceling"), (run_id,))
            cur.execute(_RUNS.sql("cancel_queued_tasks"), (run_id,))
            cur.execute(_RUNS.sql("cancel_leased_tasks"), (run_id,))
        if runs:
            cur.execute(_RUNS.sql("settle_runs"), (runs,))
        return len(runs)

    # -- runs (the commit protocol's inputs) ---------------------------------------------------

    def run(self, run_id: uuid.UUID) -> dict[str, Any] | None:
        with self._transaction() as cur:
            cur.execute(_SQL.sql("run"), {"org": self.org, "run": run_id})
            return cur.fetchone()

    def run_outputs(self, run_id: uuid.UUID) -> list[dict[str, Any]]:
        with self._transaction() as cur:
            cur.execute(_SQL.sql("run_outputs"), {"org": self.org, "run": run_id})
            return list(cur.fetchall())

    def version_of_run(self, dataset_id: str, run_id: uuid.UUID) -> tuple[int, VersionState] | None:
        """The newest version of ``dataset_id`` the run made (None: none yet)."""
        with self._transaction() as cur:
            cur.execute(_SQL.sql("version_of_run"),
                        {"org": self.org, "dataset": dataset_id, "run": str(run_id)})
            row = cur.fetchone()
        return None if row is None else (int(row["version"]), VersionState(row["state"]))

    def snapshots(self, versions: Mapping[str, int]) -> dict[str, int]:
        """The Iceberg snapshot of each ``dataset: version`` (those that have one)."""
        datasets = sorted(versions)
        with self._transaction() as cur:
            cur.execute(_SQL.sql("snapshots"), {"org": self.org, "datasets": datasets,
                                                "versions": [versions[d] for d in datasets]})
            return {r["dataset_id"]: int(r["snapshot_id"]) for r in cur.fetchall()}

    # -- reads --------------------------------------------------------------------------------

    def datasets(self) -> list[dict[str, Any]]:
        with self._transaction() as cur:
            cur.execute(_SQL.sql("datasets"), {"org": self.org})
            return list(cur.fetchall())

    def versions(self, dataset_id: str, *, limit: int = 50) -> list[dict[str, Any]]:
        """The dataset's versions, newest first; :class:`DatasetNotFound` for an unknown dataset."""
        with self._transaction() as cur:
            cur.execute(_SQL.sql("dataset_exists"), {"org": self.org, "dataset": dataset_id})
            if cur.fetchone() is None:
                raise DatasetNotFound(f"no dataset {dataset_id!r} in org {self.org!r}")
            cur.execute(_SQL.sql("versions"), {"org": self.org, "dataset": dataset_id, "limit": limit})
            return list(cur.fetchall())

    def history(self, *, limit: int = 50) -> list[dict[str, Any]]:
        with self._transaction() as cur:
            cur.execute(_SQL.sql("history"), {"org": self.org, "limit": limit})
            return list(cur.fetchall())

    def table_names(self) -> dict[str, str]:
        """Each registered dataset's Iceberg table (``namespace.name``)."""
        return {r["dataset_id"]: r["table_name"] for r in self.datasets()}

    def job_outputs(self, dag: str, dag_version: int) -> dict[str, dict[str, Any]]:
        """The write spec (mode, unique key) of each dataset the DAG version's jobs write."""
        with self._transaction() as cur:
            cur.execute(_SQL.sql("job_outputs"), {"org": self.org, "dag": dag, "version": dag_version})
            return {r["dataset"]: dict(r["write"] or {}) for r in cur.fetchall()}

    # -- lineage ------------------------------------------------------------------------------

    def version(self, dataset_id: str, version: int | None = None) -> dict[str, Any]:
        """One version with its manifest (default: the current one); :class:`DatasetNotFound` for
        an unknown dataset, :class:`VersionNotFound` for a version it does not have."""
        with self._transaction() as cur:
            cur.execute(_SQL.sql("dataset_exists"), {"org": self.org, "dataset": dataset_id})
            if cur.fetchone() is None:
                raise DatasetNotFound(f"no dataset {dataset_id!r} in org {self.org!r}")
            current = _newest(cur, self.org).pointers.get(dataset_id)
            wanted = current if version is None else version
            row = None
            if wanted is not None:
                cur.execute(_SQL.sql("version"), {"org": self.org, "dataset": dataset_id, "version": wanted})
                row = cur.fetchone()
            if row is None:
                what = "no current version" if version is None else f"no version {version}"
                raise VersionNotFound(f"dataset {dataset_id!r} has {what}")
            return {**row, "dataset_id": dataset_id, "current": row["version"] == current}

    def consumers(self, dataset_id: str, version: int) -> list[dict[str, Any]]:
        """The versions built from ``dataset_id`` ``version`` (their inputs name it)."""
        with self._transaction() as cur:
            cur.execute(_SQL.sql("consumers"), {"org": self.org, "dataset": dataset_id, "version": version})
            return list(cur.fetchall())
