"""Deployed DAG versions in Postgres: deploy, rollback, retire, and the lookups of a job's policy.

Every change is ONE transaction under a per-org advisory lock, so concurrent deploys never make
two versions with one number, and dataset ownership (one producing DAG per dataset, across DAGs)
is checked and claimed without races. A refused deploy leaves everything as it was. The queries
are in ``dispatcher/sql/dags.sql``; the tables in migration ``0006_dags.sql``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from dispatcher.dag.diff import DagDiff, diff, digest
from dispatcher.dag.errors import DagError, DagNotFound, DagVersionNotFound, DatasetOwnedError
from dispatcher.dag.job_spec import JobSpec
from dispatcher.dag.loader import CHAIN_DAGS, DagSource, load_builtin_dag
from dispatcher.dag.rematerialize import plan_rematerialization
from dispatcher.dag.spec import SKIP_CHECKS, DagSpec
from tracekit.db.queries import load_queries
from tracekit.db.transactions import transaction
from tracekit.errors import first_problem

Cursor = psycopg.Cursor[dict[str, Any]]


_SQL = load_queries("dispatcher.sql", "dags.sql")


@dataclass(frozen=True, slots=True)
class DeployResult:
    org: str
    dag: str
    version: int  # the new version, or the active one when nothing changed
    created: bool  # False: the active version already has this digest ("unchanged")
    digest: str
    previous_version: int | None
    diff: DagDiff
    claimed: tuple[str, ...] = ()  # datasets this deploy made the DAG the producer of
    released: tuple[str, ...] = ()  # datasets the DAG no longer produces
    dry: bool = False  # nothing was written (--dry)
    rematerialize: tuple[str, ...] = ()  # derived jobs built again, in order (dag/rematerialize.py)
    rematerialization: uuid.UUID | None = None  # its state.rematerializations row


@dataclass(frozen=True, slots=True)
class DagVersion:
    org: str
    dag: str
    version: int
    digest: str
    active: bool
    spec: DagSpec
    source_yaml: str
    source_path: str
    deployed_by: str
    deployed_at: dt.datetime


@dataclass(frozen=True, slots=True)
class RollbackResult:
    org: str
    dag: str
    version: int  # active now
    previous_version: int | None
    changed: bool  # False: that version was active already
    claimed: tuple[str, ...] = ()
    released: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job of a deployed version: what the dispatcher needs to create and lease its tasks."""

    org: str
    dag: str
    version: int
    job: str
    operator: str
    activation: str
    runtime: str
    max_concurrency: int | None
    max_attempts: int
    backoff_initial_ms: int
    backoff_max_ms: int
    backoff_multiplier: float
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    spec: JobSpec


# -------------------------------------------------------------------------------- plumbing


@contextmanager
def _transaction(url: str) -> Iterator[Cursor]:
    """One transaction; missing tables and lost races map to errors saying what to do."""
    try:
        with transaction(url, tables="the DAG tables") as cur:
            yield cur
    except pg_errors.UniqueViolation as exc:  # only reachable by a writer that skips the org lock
        raise DagError(f"a concurrent change got there first ({exc.diag.constraint_name}); "
                       "run the command again") from exc


def stored_spec(data: Any, dag: str, version: int) -> DagSpec:
    """A spec read back from ``state.dag_versions`` (valid when deployed; rules may have grown since)."""
    try:
        return DagSpec.model_validate(data, context={SKIP_CHECKS: True})
    except ValidationError as exc:
        where, problem = first_problem(exc)
        raise DagError(f"stored version {version} of dag {dag!r} no longer reads as a DAG: "
                       f"{where}: {problem}") from exc


def _version(row: dict[str, Any], org: str, dag: str) -> DagVersion:
    return DagVersion(org=org, dag=dag, version=row["version"], digest=row["digest"], active=row["active"],
                      spec=stored_spec(row["spec"], dag, row["version"]), source_yaml=row["source_yaml"],
                      source_path=row["source_path"], deployed_by=row["deployed_by"],
                      deployed_at=row["deployed_at"])


def _owned_elsewhere(cur: Cursor, org: str, dag: str, datasets: Sequence[str], doing: str) -> None:
    cur.execute(_SQL.sql("foreign_producers"), {"org": org, "dag": dag, "datasets": list(datasets)})
    rows = [r for r in cur.fetchall() if not (dag in CHAIN_DAGS and r["dag"] in CHAIN_DAGS)]
    if len(rows) == 1:
        row = rows[0]
        raise DatasetOwnedError(
            f"cannot {doing} dag {dag!r}: dataset {row['dataset_id']!r} is produced by dag {row['dag']!r}; a "
            f"dataset has one producing DAG: remove it from this DAG's outputs, or from dag {row['dag']!r} "
            f"first (deploy it without, or `trace dag retire {row['dag']}`)"
        )
    if rows:
        owners = ", ".join(f"{r['dataset_id']!r} (dag {r['dag']!r})" for r in rows)
        raise DatasetOwnedError(
            f"cannot {doing} dag {dag!r}: datasets {owners} are produced by other DAGs; a dataset has one "
            "producing DAG: remove them from this DAG's outputs, or from those DAGs first"
        )


def _set_producer(cur: Cursor, org: str, dag: str, version: int, datasets: Sequence[str]
                  ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Make ``dag`` the producer of exactly ``datasets``; returns (claimed, released)."""
    params = {"org": org, "dag": dag, "version": version, "datasets": list(datasets)}
    cur.execute(_SQL.sql("owned_datasets"), params)
    owned = {row["dataset_id"] for row in cur.fetchall()}
    cur.execute(_SQL.sql("release_datasets"), params)
    released = tuple(sorted(row["dataset_id"] for row in cur.fetchall()))
    cur.execute(_SQL.sql("claim_datasets"), params)
    if cur.rowcount != len(set(datasets)):
        _owned_elsewhere(cur, org, dag, datasets, "deploy")
    return tuple(sorted(set(datasets) - owned)), released


def _job_params(org: str, dag: str, version: int, job: JobSpec) -> dict[str, Any]:
    backoff = job.retry.backoff
    return {
        "org": org, "dag": dag, "version": version, "job": job.name, "operator": job.operator,
        "activation": job.activation, "runtime": job.runtime,
        "max_concurrency": job.scaling.max_concurrency, "max_attempts": job.retry.max_attempts,
        "backoff_initial_ms": backoff.initial.ms, "backoff_max_ms": backoff.max.ms,
        "backoff_multiplier": backoff.multiplier, "inputs": list(job.inputs),
        "outputs": list(job.output_datasets), "spec": Jsonb(job.model_dump(mode="json")),
    }


# --------------------------------------------------------------------------------- changes


class _DryRun(Exception):
    """Raised inside the transaction to roll a --dry deploy back, carrying its result."""

    def __init__(self, result: DeployResult) -> None:
        super().__init__("dry run")
        self.result = result


def deploy(url: str, spec: DagSpec, source: DagSource, deployed_by: str, *, dry: bool = False
           ) -> DeployResult:
    """Make ``spec`` the active version of its DAG: a new version, unless the active one has its digest.

    Refused (DatasetOwnedError, nothing changed) when another DAG produces one of its outputs.
    ``dry``: everything is checked and computed in the transaction, which is then rolled back.
    """
    org, dag, new_digest = spec.org, spec.dag, digest(spec)
    try:
        with _transaction(url) as cur:
            cur.execute(_SQL.sql("lock_org"), {"org": org})
            cur.execute(_SQL.sql("active_version"), {"org": org, "dag": dag})
            active = cur.fetchone()
            old = stored_spec(active["spec"], dag, active["version"]) if active else None
            change = diff(old, spec)
            previous = active["version"] if active else None
            _owned_elsewhere(cur, org, dag, spec.output_datasets, "deploy")
            if active is not None and active["digest"] == new_digest:
                return DeployResult(org, dag, active["version"], False, new_digest, previous, change, dry=dry)
            cur.execute(_SQL.sql("next_version"), {"org": org, "dag": dag})
            version = int(cur.fetchone()["version"])  # type: ignore[index]
            cur.execute(_SQL.sql("deactivate"), {"org": org, "dag": dag})
            cur.execute(_SQL.sql("insert_version"), {
                "org": org, "dag": dag, "version": version, "digest": new_digest,
                "spec": Jsonb(spec.to_json()), "source_yaml": source.text, "source_path": source.path,
                "deployed_by": deployed_by,
            })
            cur.executemany(_SQL.sql("insert_job"),
                            [_job_params(org, dag, version, job) for job in spec.jobs])
            claimed, released = _set_producer(cur, org, dag, version, spec.output_datasets)
            jobs, remat = _rematerialize(cur, spec, version, change)
            result = DeployResult(org, dag, version, True, new_digest, previous, change, claimed, released,
                                  dry, jobs, remat)
            if dry:
                raise _DryRun(result)
            return result
    except _DryRun as rolled_back:
        return rolled_back.result


def _rematerialize(cur: Cursor, spec: DagSpec, version: int, change: DagDiff
                   ) -> tuple[tuple[str, ...], uuid.UUID | None]:
    """In the deploy's transaction, record the rematerialization this version needs (if its
    derived jobs changed): the dispatcher's rematerializer builds it, and supersedes (cancels)
    those of the versions no longer active (dispatcher/datasets/rematerialize.py)."""
    cur.execute(_SQL.sql("versioned_datasets"), {"org": spec.org})
    jobs = plan_rematerialization(change, spec, {r["dataset_id"] for r in cur.fetchall()})
    if not jobs:
        return (), None
    remat = uuid.uuid4()
    cur.execute(_SQL.sql("insert_rematerialization"), {
        "remat": remat, "org": spec.org, "dag": spec.dag, "version": version, "jobs": list(jobs)})
    return jobs, remat


async def ensure_builtin_dag(url: str, dag: str, org: str) -> int:
    """Deploy the built-in DAG ``dag`` (``dispatcher/dags/<dag>.yaml``) for ``org`` unless its active
    version is this one (a deploy of the same digest changes nothing); returns the active version."""
    loaded = load_builtin_dag(dag, org)
    result = await asyncio.to_thread(deploy, url, loaded.spec, loaded.source, "trace")
    return result.version


def rollback_to(url: str, org: str, dag: str, version: int) -> RollbackResult:
    """Make an earlier (or any) version of the DAG the active one again, atomically.

    Its outputs become the DAG's datasets again; refused when another DAG produces one of them now.
    """
    with _transaction(url) as cur:
        cur.execute(_SQL.sql("lock_org"), {"org": org})
        cur.execute(_SQL.sql("version"), {"org": org, "dag": dag, "version": version})
        target = cur.fetchone()
        if target is None:
            cur.execute(_SQL.sql("next_version"), {"org": org, "dag": dag})
            latest = int(cur.fetchone()["version"]) - 1  # type: ignore[index]
            if latest == 0:
                raise DagNotFound(f"dag {dag!r} of org {org!r} has never been deployed")
            raise DagVersionNotFound(f"dag {dag!r} has no version {version} (versions 1-{latest})")
        return activate_in(cur, org, dag, version, target["spec"])


def activate_in(cur: Cursor, org: str, dag: str, version: int, stored: Any) -> RollbackResult:
    """Make ``version`` (whose stored spec is ``stored``) the DAG's active version, in the
    caller's transaction, which holds the org's deploy lock (``lock_org``)."""
    cur.execute(_SQL.sql("active_version"), {"org": org, "dag": dag})
    active = cur.fetchone()
    previous = active["version"] if active else None
    if previous == version:
        return RollbackResult(org, dag, version, previous, False)
    spec = stored_spec(stored, dag, version)
    _owned_elsewhere(cur, org, dag, spec.output_datasets, f"roll back to version {version} of")
    cur.execute(_SQL.sql("deactivate"), {"org": org, "dag": dag})
    cur.execute(_SQL.sql("activate"), {"org": org, "dag": dag, "version": version})
    claimed, released = _set_producer(cur, org, dag, version, spec.output_datasets)
    return RollbackResult(org, dag, version, previous, True, claimed, released)


def retire(url: str, org: str, dag: str) -> tuple[int | None, tuple[str, ...]]:
    """Deactivate the DAG (its versions stay, for rollback) and release its datasets.

    Returns the version that was active (None: none was) and the datasets released.
    """
    with _transaction(url) as cur:
        cur.execute(_SQL.sql("lock_org"), {"org": org})
        return retire_in(cur, org, dag)


def retire_in(cur: Cursor, org: str, dag: str) -> tuple[int | None, tuple[str, ...]]:
    """:func:`retire` in the caller's transaction, which holds the org's deploy lock."""
    cur.execute(_SQL.sql("active_version"), {"org": org, "dag": dag})
    active = cur.fetchone()
    cur.execute(_SQL.sql("deactivate"), {"org": org, "dag": dag})
    cur.execute(_SQL.sql("release_datasets"), {"org": org, "dag": dag, "datasets": []})
    released = tuple(sorted(row["dataset_id"] for row in cur.fetchall()))
    return (active["version"] if active else None), released


def lock_deploys(cur: Cursor, org: str) -> None:
    """Take the org's deploy lock for the rest of the caller's transaction."""
    cur.execute(_SQL.sql("lock_org"), {"org": org})


def stored_version(cur: Cursor, org: str, dag: str, version: int) -> Any:
    """The stored spec of a DAG version (None: no such version), in the caller's transaction."""
    cur.execute(_SQL.sql("version"), {"org": org, "dag": dag, "version": version})
    row = cur.fetchone()
    return None if row is None else row["spec"]


# ------------------------------------------------------------------------------------ reads


def active_spec(url: str, org: str, dag: str) -> DagVersion | None:
    """The active version of the DAG (with its spec), or None if none is active."""
    with _transaction(url) as cur:
        cur.execute(_SQL.sql("active_full"), {"org": org, "dag": dag})
        row = cur.fetchone()
    return None if row is None else _version(row, org, dag)


def get_version(url: str, org: str, dag: str, version: int) -> DagVersion:
    with _transaction(url) as cur:
        cur.execute(_SQL.sql("version"), {"org": org, "dag": dag, "version": version})
        row = cur.fetchone()
    if row is None:
        raise DagVersionNotFound(f"dag {dag!r} of org {org!r} has no version {version}")
    return _version(row, org, dag)


def list_versions(url: str, org: str, dag: str) -> list[DagVersion]:
    """Every version of the DAG, oldest first."""
    with _transaction(url) as cur:
        cur.execute(_SQL.sql("versions"), {"org": org, "dag": dag})
        rows = cur.fetchall()
    return [_version(row, org, dag) for row in rows]


def list_dags(url: str, org: str) -> list[dict[str, Any]]:
    """The active DAGs of the org: dag, version, digest, deployed_at, deployed_by, jobs."""
    with _transaction(url) as cur:
        cur.execute(_SQL.sql("dags"), {"org": org})
        return cur.fetchall()


def dataset_producers(url: str, org: str) -> dict[str, str]:
    """dataset_id -> the DAG that produces it."""
    with _transaction(url) as cur:
        cur.execute(_SQL.sql("producers"), {"org": org})
        return {row["dataset_id"]: row["dag"] for row in cur.fetchall()}


def _job_record(row: dict[str, Any] | None, org: str, dag: str) -> JobRecord | None:
    if row is None:
        return None
    return JobRecord(
        org=org, dag=dag, version=row["version"], job=row["job"], operator=row["operator"],
        activation=row["activation"], runtime=row["runtime"], max_concurrency=row["max_concurrency"],
        max_attempts=row["max_attempts"], backoff_initial_ms=row["backoff_initial_ms"],
        backoff_max_ms=row["backoff_max_ms"], backoff_multiplier=float(row["backoff_multiplier"]),
        inputs=tuple(row["inputs"]), outputs=tuple(row["outputs"]), spec=JobSpec.model_validate(row["spec"]),
    )


def _job_query(org: str, dag: str, job: str, version: int | None) -> tuple[bytes, dict[str, Any]]:
    params: dict[str, Any] = {"org": org, "dag": dag, "job": job, "version": version}
    return (_SQL.sql("active_job") if version is None else _SQL.sql("job_at_version")), params


def active_job(conn: psycopg.Connection[Any], org: str, dag: str, job: str, version: int | None = None
               ) -> JobRecord | None:
    """The job of the DAG's active version (or of ``version``), or None if there is no such job."""
    query, params = _job_query(org, dag, job, version)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return _job_record(cur.fetchone(), org, dag)


async def active_job_async(conn: psycopg.AsyncConnection[Any], org: str, dag: str, job: str,
                           version: int | None = None) -> JobRecord | None:
    """:func:`active_job` on an async connection (the dispatcher's)."""
    query, params = _job_query(org, dag, job, version)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return _job_record(await cur.fetchone(), org, dag)
