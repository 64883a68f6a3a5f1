"""Dataset endpoints: list datasets and versions, a version and its lineage, the pointer-set
history, cutover, rollback.

Changes (cutover, rollback) are one Postgres transaction each (:mod:`dispatcher.datasets.store`,
run in a thread: it is the synchronous control-plane store); refusals are 422 problems naming the
dataset and version at fault. Every request is audited like the rest of the API.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

from dispatcher.api.deps import D, Public, problem
from dispatcher.api.models import Problem
from dispatcher.datasets.compact import CompactUnavailable, Plan, compact_next
from dispatcher.datasets.lineage import MAX_DEPTH, lineage
from dispatcher.datasets.pointers import CutoverRefused, PointerSetNotFound, RollbackRefused, VersionNotFound
from dispatcher.datasets.store import Applied, DatasetNotFound, DatasetStore
from dispatcher.protocol import RequestBody
from operators.parquet_compact import Partition
from tracekit.errors import ConfigError
from tracekit.iceberg import open_catalog

router = APIRouter(prefix="/v1/datasets", tags=["datasets"],
                   responses={401: {"model": Problem}, 422: {"model": Problem}})

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
MAX_NUMBER = 2**53  # versions and pointer sets: exact in JSON and in bigint
DatasetId = Annotated[str, Path(min_length=1, max_length=200, pattern=NAME)]
DatasetName = Annotated[str, Field(min_length=1, max_length=200, pattern=NAME)]
Reason = Annotated[str, Field(max_length=2000, pattern=r"^[^\x00]*$")]


class DatasetView(BaseModel):
    dataset_id: str
    kind: str
    table_name: str
    description: str
    versions: int
    current_version: int | None
    cold_watermark: int | None


class DatasetList(BaseModel):
    pointer_set: int
    datasets: list[DatasetView]


class VersionView(BaseModel):
    version: int
    state: str
    current: bool
    based_on: int | None
    snapshot_id: int | None
    block_start: int | None
    block_end: int | None
    cold_watermark: int | None
    row_count: int
    byte_count: int
    file_count: int
    producer: dict[str, Any]
    inputs: dict[str, Any]
    metadata: dict[str, Any]
    failure: str | None
    created_at: datetime
    finished_at: datetime | None


class VersionDetail(VersionView):
    dataset_id: str
    manifest: dict[str, Any]


class LineageNode(BaseModel):
    dataset_id: str
    version: int
    state: str | None = None
    current: bool = False
    row_count: int | None = None
    byte_count: int | None = None
    file_count: int | None = None
    block_start: int | None = None
    block_end: int | None = None
    producer: dict[str, Any] = Field(default_factory=dict)
    input_versions: dict[str, int] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    failure: str | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None
    missing: bool = False  # an input version that no longer exists
    truncated: bool = False  # deeper than asked: its inputs are not listed
    inputs: list[LineageNode] = Field(default_factory=list)


class Consumer(BaseModel):
    dataset_id: str
    version: int
    state: str
    producer: dict[str, Any]


class Lineage(LineageNode):
    consumers: list[Consumer]


class VersionList(BaseModel):
    dataset_id: str
    versions: list[VersionView]


class PointerSetView(BaseModel):
    seq: int
    action: str
    pointers: dict[str, int]
    watermarks: dict[str, int]
    dag_versions: dict[str, int]
    changed: list[str]
    restores: int | None
    actor: str
    reason: str
    created_at: datetime


class CutoverRequest(RequestBody):
    versions: dict[DatasetName, Annotated[int, Field(ge=1, le=MAX_NUMBER)]] = Field(
        min_length=1, max_length=1000,
        description="dataset -> version: every pointer moves in one transaction")
    reason: Reason = ""


class RollbackRequest(RequestBody):
    to: int | None = Field(None, ge=0, le=MAX_NUMBER,
                           description="The pointer set to restore (default: the one before the newest)")
    reason: Reason = ""


class AppliedView(BaseModel):
    pointer_set: int
    changed: list[str]
    pointers: dict[str, int]
    restores: int | None = None
    dags_restored: dict[str, int | None] = Field(default_factory=dict)
    canceled_runs: int = 0


def _store(d: D) -> DatasetStore:
    url = d.config.database_url or str(d.store.pool.conninfo)
    return DatasetStore(url, d.config.org_id)


def _applied(a: Applied) -> AppliedView:
    return AppliedView(pointer_set=a.seq, changed=list(a.changed), pointers=dict(a.pointers),
                       restores=a.restores, dags_restored=dict(a.dags_restored),
                       canceled_runs=a.canceled_runs)


@router.get("", response_model=DatasetList, summary="The org's datasets and their current versions")
async def list_datasets(d: D, _: Public) -> DatasetList:
    store = _store(d)
    pinned, rows = await asyncio.gather(asyncio.to_thread(store.pin), asyncio.to_thread(store.datasets))
    return DatasetList(pointer_set=pinned.seq, datasets=[
        DatasetView(**row, current_version=pinned.pointers.get(row["dataset_id"]),
                    cold_watermark=pinned.watermarks.get(row["dataset_id"])) for row in rows])


@router.get("/pointers", response_model=list[PointerSetView], summary="Cutovers and rollbacks, newest first")
async def pointer_history(d: D, _: Public, limit: Annotated[int, Query(ge=1, le=1000)] = 50
                          ) -> list[PointerSetView]:
    rows = await asyncio.to_thread(_store(d).history, limit=limit)
    return [PointerSetView(**row) for row in rows]


@router.get("/{dataset_id}/versions", response_model=VersionList, responses={404: {"model": Problem}},
            summary="A dataset's versions, newest first")
async def list_versions(dataset_id: DatasetId, d: D, _: Public,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> VersionList:
    store = _store(d)
    pinned = await asyncio.to_thread(store.pin)
    try:
        rows = await asyncio.to_thread(store.versions, dataset_id, limit=limit)
    except DatasetNotFound as exc:
        raise problem(404, "dataset_not_found", str(exc)) from exc
    current = pinned.pointers.get(dataset_id)
    return VersionList(dataset_id=dataset_id, versions=[
        VersionView(**row, current=row["version"] == current) for row in rows])


@router.get("/{dataset_id}/versions/{version}", response_model=VersionDetail,
            responses={404: {"model": Problem}}, summary="One version, with its manifest")
async def show_version(dataset_id: DatasetId, version: Annotated[int, Path(ge=1, le=MAX_NUMBER)], d: D,
                       _: Public) -> VersionDetail:
    try:
        row = await asyncio.to_thread(_store(d).version, dataset_id, version)
    except (DatasetNotFound, VersionNotFound) as exc:
        raise problem(404, "version_not_found", str(exc)) from exc
    return VersionDetail(**row)


@router.get("/{dataset_id}/lineage", response_model=Lineage, responses={404: {"model": Problem}},
            summary="What made a version (default: the current one), from which input versions, "
                    "and which versions were built from it")
async def version_lineage(dataset_id: DatasetId, d: D, _: Public,
                          version: Annotated[int | None, Query(ge=1, le=MAX_NUMBER)] = None,
                          depth: Annotated[int, Query(ge=0, le=MAX_DEPTH)] = 3) -> Lineage:
    try:
        found = await asyncio.to_thread(lineage, _store(d), dataset_id, version, depth=depth)
    except (DatasetNotFound, VersionNotFound) as exc:
        raise problem(404, "version_not_found", str(exc)) from exc
    return Lineage(**found)


@router.post("/cutover", response_model=AppliedView, summary="Make versions current, all at once",
             responses={404: {"model": Problem}, 409: {"model": Problem}})
async def cutover(body: CutoverRequest, d: D, actor: Public) -> AppliedView:
    try:
        applied = await asyncio.to_thread(_store(d).cutover, body.versions, actor=actor, reason=body.reason)
    except VersionNotFound as exc:
        raise problem(404, "version_not_found", str(exc)) from exc
    except CutoverRefused as exc:
        raise problem(409, "cutover_refused", str(exc)) from exc
    return _applied(applied)


@router.post("/rollback", response_model=AppliedView,
             responses={404: {"model": Problem}, 409: {"model": Problem}},
             summary="Restore an earlier pointer set and its DAG versions; cancel the rolled-back runs")
async def rollback(body: RollbackRequest, d: D, actor: Public) -> AppliedView:
    try:
        applied = await asyncio.to_thread(_store(d).rollback, to_seq=body.to, actor=actor, reason=body.reason)
    except PointerSetNotFound as exc:
        raise problem(404, "pointer_set_not_found", str(exc)) from exc
    except RollbackRefused as exc:
        raise problem(409, "rollback_refused", str(exc)) from exc
    return _applied(applied)


class CompactRequest(RequestBody):
    partition: int | None = Field(None, ge=0, le=MAX_NUMBER, description=(
        "The first block of the partition to compact (a multiple of the contract's partition width); "
        "default: the first partition with min_files files or more"))
    min_files: int = Field(2, ge=1, le=1_000_000,
                           description="Compact a partition holding this many files or more")


class PartitionView(BaseModel):
    start: int
    end: int
    first_block: int = Field(description="The blocks its files cover (the range the commit replaces)")
    last_block: int
    files: int
    rows: int
    bytes: int


class CompactView(BaseModel):
    dataset_id: str
    version: int | None = Field(description="The version read (the current one)")
    run_id: uuid.UUID | None = Field(description="The run compacting `partition` (None: nothing to compact)")
    created: bool = Field(description="False: the run was started before for this partition and version")
    partition: PartitionView | None
    remaining: list[PartitionView] = Field(
        description="Partitions to compact once this run is committed (ask again then)")
    detail: str


def _partition(p: Partition) -> PartitionView:
    return PartitionView(start=p.start, end=p.end, first_block=p.first_block, last_block=p.last_block,
                         files=len(p.files), rows=p.rows, bytes=p.bytes)


def _compact_detail(plan: Plan, run_id: uuid.UUID | None, created: bool, remaining: int) -> str:
    if run_id is None:
        return plan.nothing()
    part = plan.chosen[0]
    text = (f"run {run_id} {'started' if created else '(started before)'}: {part} of {plan.dataset} version "
            f"{plan.version}, {len(part.files)} files, {part.rows} rows (blocks {part.first_block}.."
            f"{part.last_block}) -> 1 file")
    return text + (f"; {remaining} more partition(s) to compact once it is committed" if remaining else "")


@router.post("/{dataset_id}/compact", status_code=201, response_model=CompactView,
             responses={200: {"model": CompactView, "description": "Nothing to compact, or the run started "
                                                                  "before for this partition and version"},
                        404: {"model": Problem}, 503: {"model": Problem}},
             summary="Rewrite a partition's small files as one file: a new version with the same rows")
async def compact(dataset_id: DatasetId, d: D, actor: Public, response: Response,
                  body: CompactRequest | None = None) -> CompactView:
    with _store(d) as store:
        view = await _compact(store, dataset_id, d, actor, body or CompactRequest())
    if not view.created:
        response.status_code = 200
    return view


async def _compact(store: DatasetStore, dataset_id: str, d: D, actor: str, asked: CompactRequest
                   ) -> CompactView:
    config = d.config
    warehouse, s3 = config.warehouse, config.s3
    if warehouse is None:
        try:
            await asyncio.to_thread(store.versions, dataset_id, limit=1)
        except DatasetNotFound as exc:
            raise problem(404, "dataset_not_found", str(exc)) from exc
        raise problem(503, "compact_unavailable", "the dispatcher has no warehouse: it makes no versions")
    url = store.url
    chain_id, chain = next(iter(config.chains.items())) if len(config.chains) == 1 else (None, None)
    try:
        started = await compact_next(d.store, store, lambda: open_catalog(url, warehouse, s3), dataset_id,
                                     partition=asked.partition, min_files=asked.min_files, chain_id=chain_id,
                                     chain=chain, submitted_by=actor)
    except DatasetNotFound as exc:
        raise problem(404, "dataset_not_found", str(exc)) from exc
    except CompactUnavailable as exc:
        raise problem(503, "compact_unavailable", str(exc)) from exc
    except ConfigError as exc:  # not a chain dataset, a partition not aligned or without rows
        raise problem(422, "compact_refused", str(exc)) from exc
    plan = started.plan
    return CompactView(dataset_id=dataset_id, version=plan.version, run_id=started.run_id,
                       created=started.created,
                       partition=None if started.partition is None else _partition(started.partition),
                       remaining=[_partition(p) for p in started.remaining],
                       detail=_compact_detail(plan, started.run_id, started.created, len(started.remaining)))
