"""Request and response bodies of the public HTTP API (``/v1/*``; with :mod:`dispatcher.protocol`,
the bodies of ``/internal/*``, they are the OpenAPI schema)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from dispatcher.protocol import MAX_BLOCK, JsonObject, LogLine, Name, RequestBody

Dataset = Literal["blocks", "transactions", "logs", "traces"]  # traces: opt-in, never a default


class Problem(BaseModel):
    """Every 4xx body: what is wrong, in one line, and where."""

    error: str = Field(description="A short machine-readable code, e.g. not_found, stale_attempt")
    detail: Any = Field(description="What is wrong and how to fix it")


class BackfillRequest(RequestBody):
    chain_id: int = Field(ge=1, le=MAX_BLOCK, description="Chain to backfill (must be one Trace serves)")
    datasets: list[Dataset] = Field(min_length=1, max_length=4,
                                    description="Datasets to extract (traces only when listed)")
    start_block: int = Field(ge=0, le=MAX_BLOCK, description="First block, inclusive")
    end_block: int = Field(ge=0, le=MAX_BLOCK, description="Last block, inclusive")
    chunk_size: int = Field(1000, ge=1, le=1_000_000, description=(
        "Most blocks per task and per file: chunks are aligned to multiples of it and cut at the "
        "datasets' partition boundaries (every 10,000 blocks), so each file lies in one partition"))
    engine: Literal["rpc", "cryo"] = Field("rpc", description="Extraction engine of cryo_ingest")

    @model_validator(mode="after")
    def _range(self) -> BackfillRequest:
        if self.end_block < self.start_block:
            raise ValueError(f"end_block {self.end_block} is before start_block {self.start_block}")
        if len(set(self.datasets)) != len(self.datasets):
            raise ValueError("datasets must not repeat")
        return self


class Submitted(BaseModel):
    run_id: uuid.UUID
    created: bool
    status_url: str


class ManualRunRequest(RequestBody):
    params: JsonObject = Field(default_factory=dict, description="Passed to every task of the run")


class EventRequest(RequestBody):
    name: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/\-]*$",
                      description="The event's name, as DAG triggers name it ({event: <name>})")
    key: Name | None = Field(None, description="Deduplicates: an event sent again with its key is "
                                               "ignored. Default: a new key per call")
    payload: JsonObject = Field(default_factory=dict, description="Passed to the tasks it starts")


class EventAccepted(BaseModel):
    accepted: bool = Field(description="False when this name and key were received before")
    key: str
    runs: list[Submitted] = Field(description="The runs this event started now (one per DAG)")


class Progress(BaseModel):
    tasks: dict[str, int] = Field(description="Tasks by state")
    chunks_total: int
    chunks_done: int
    blocks_total: int
    blocks_done: int
    rows: dict[str, int] = Field(description="Committed rows by dataset")
    files: int
    fraction: float


class RunView(BaseModel):
    run_id: uuid.UUID
    org_id: str
    kind: str
    dag: str
    dag_version: int
    state: str
    params: dict[str, Any]
    submitted_by: str
    created_at: datetime
    finished_at: datetime | None
    progress: Progress
    errors: list[dict[str, Any]] = Field(description="Last errors of dead or retrying tasks")


class RunList(BaseModel):
    runs: list[RunView]


class CancelView(BaseModel):
    run_id: uuid.UUID
    state: str


class TaskSummary(BaseModel):
    task_id: uuid.UUID
    run_id: uuid.UUID
    job: str
    operator: str
    state: str
    attempt: int
    failures: int
    partition: str | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None


class TaskList(BaseModel):
    tasks: list[TaskSummary]


class AttemptView(BaseModel):
    attempt: int
    worker: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    error: str | None
    traceback: str | None


class OutputView(BaseModel):
    dataset_id: str
    uri: str
    rows: int
    bytes: int
    block_start: int | None
    block_end: int | None
    attempt: int
    sha256: str | None = Field(None, description="sha256 of the file's bytes (hex), when the worker sent it")


class TaskDetail(TaskSummary):
    payload: dict[str, Any]
    reads: list[str]
    writes: list[str]
    max_attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    cancel_requested: bool
    last_traceback: str | None
    attempts: list[AttemptView]
    logs: list[LogLine]
    outputs: list[OutputView]
