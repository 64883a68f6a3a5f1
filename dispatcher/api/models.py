"""Request and response bodies of the HTTP API (they are the OpenAPI schema)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

MAX_BLOCK = 2**53  # far beyond any chain; keeps every number exact in JSON and in bigint


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:\-/]+$")]
Dataset = Literal["blocks", "transactions", "logs"]


MAX_JSON_DEPTH = 64  # nesting of event payloads: far below the serializers' recursion limits


def _clean_json(value: Any, depth: int = 0) -> Any:
    """JSON that Postgres' jsonb accepts: no NUL in strings, numbers within bigint, at most
    ``MAX_JSON_DEPTH`` levels of nesting (deeper would overflow the stack or orjson)."""
    if isinstance(value, str):
        return _no_nul(value)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_BLOCK:
            raise ValueError("integers must be within +-2**53")
        return value
    if isinstance(value, list | dict) and depth >= MAX_JSON_DEPTH:
        raise ValueError(f"must not nest deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, list):
        return [_clean_json(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {_no_nul(str(k)): _clean_json(v, depth + 1) for k, v in value.items()}
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(_clean_json)]


class Problem(BaseModel):
    """Every 4xx body: what is wrong, in one line, and where."""

    error: str = Field(description="A short machine-readable code, e.g. not_found, stale_attempt")
    detail: Any = Field(description="What is wrong and how to fix it")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackfillRequest(_Body):
    chain_id: int = Field(ge=1, le=MAX_BLOCK, description="Chain to backfill (must be one Trace serves)")
    datasets: list[Dataset] = Field(min_length=1, max_length=3, description="Datasets to extract")
    start_block: int = Field(ge=0, le=MAX_BLOCK, description="First block, inclusive")
    end_block: int = Field(ge=0, le=MAX_BLOCK, description="Last block, inclusive")
    chunk_size: int = Field(1000, ge=1, le=1_000_000, description="Blocks per task and per file")
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


class ManualRunRequest(_Body):
    params: JsonObject = Field(default_factory=dict, description="Passed to every task of the run")


class EventRequest(_Body):
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


class LogLine(BaseModel):
    model_config = ConfigDict(extra="forbid")
    level: Literal["debug", "info", "warning", "error"] = "info"
    message: Text = Field(max_length=10_000)
    attempt: int | None = None
    at: datetime | None = None


class OutputView(BaseModel):
    dataset_id: str
    uri: str
    rows: int
    bytes: int
    block_start: int | None
    block_end: int | None
    attempt: int


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


# -- worker endpoints -----------------------------------------------------------------------


class FetchRequest(_Body):
    worker_id: Name
    task_ids: list[uuid.UUID] = Field(default_factory=list, max_length=1000,
                                      description="Woken tasks, claimed first")
    operators: list[Name] | None = Field(None, max_length=100, description="Operators this worker runs")
    limit: int = Field(1, ge=1, le=1000, description="At most this many tasks")


class LeasedTask(BaseModel):
    task_id: uuid.UUID
    run_id: uuid.UUID
    org_id: str
    dag: str
    job: str
    operator: str
    attempt: int
    payload: dict[str, Any]
    reads: list[str]
    writes: list[str]
    lease_expires_at: datetime
    token: str = Field(description="Per-task token for /internal/heartbeat, /events, /task-complete")


class FetchResponse(BaseModel):
    tasks: list[LeasedTask]


class HeartbeatRequest(_Body):
    task_id: uuid.UUID
    attempt: int = Field(ge=1, le=2**31 - 1)
    logs: list[LogLine] = Field(default_factory=list, max_length=1000)


class HeartbeatResponse(BaseModel):
    status: Literal["ok", "canceled"]
    lease_expires_at: datetime | None
    token: str


class EventIn(_Body):
    dataset_id: Name
    partition_key: Name
    payload: JsonObject = Field(default_factory=dict)


class EventsRequest(_Body):
    task_id: uuid.UUID
    attempt: int = Field(ge=1, le=2**31 - 1)
    events: list[EventIn] = Field(min_length=1, max_length=100_000)


class EventsResponse(BaseModel):
    accepted: int
    tasks_created: int


class OutputIn(_Body):
    dataset_id: Name
    uri: Text = Field(min_length=1, max_length=2000)
    rows: int = Field(ge=0, le=MAX_BLOCK)
    bytes: int = Field(ge=0, le=MAX_BLOCK)
    block_start: int | None = Field(None, ge=0, le=MAX_BLOCK)
    block_end: int | None = Field(None, ge=0, le=MAX_BLOCK)


class CompleteRequest(_Body):
    task_id: uuid.UUID
    attempt: int = Field(ge=1, le=2**31 - 1)
    outcome: Literal["succeeded", "failed", "canceled", "released"]
    error: Text | None = Field(None, max_length=10_000)
    traceback: Text | None = Field(None, max_length=100_000)
    outputs: list[OutputIn] = Field(default_factory=list, max_length=10_000)
    logs: list[LogLine] = Field(default_factory=list, max_length=1000)


class CompleteResponse(BaseModel):
    status: Literal["ok", "canceled"]
