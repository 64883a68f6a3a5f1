"""The wire between workers and the dispatcher: the wake-up queue's name and the bodies of
``/internal/*`` (task-fetch, heartbeat, events, task-complete).

Both sides import this module and nothing of each other: the API (:mod:`dispatcher.api`) answers
with these models, the worker (:mod:`dispatcher.worker`) sends and reads them. The store's claim
answers with :class:`ClaimedTask`; the API hands it out as a :class:`LeasedTask` (the claim and its
per-task token).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

TASK_QUEUE = "tasks"  # the queue of wake-ups: each body is a task id, nothing else

MAX_BLOCK = 2**53  # far beyond any chain; keeps every number exact in JSON and in bigint
MAX_JSON_DEPTH = 64  # nesting of event payloads: far below the serializers' recursion limits


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


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


Text = Annotated[str, AfterValidator(_no_nul)]
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:\-/]+$")]
JsonObject = Annotated[dict[str, Any], AfterValidator(_clean_json)]
Attempt = Annotated[int, Field(ge=1, le=2**31 - 1)]
Outcome = Literal["succeeded", "failed", "canceled", "released"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)


class RequestBody(BaseModel):
    """A request body: frozen, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LogLine(BaseModel):
    model_config = ConfigDict(extra="forbid")
    level: Literal["debug", "info", "warning", "error"] = "info"
    message: Text = Field(max_length=10_000)
    attempt: int | None = None
    at: datetime | None = None


class FetchRequest(RequestBody):
    worker_id: Name
    task_ids: list[uuid.UUID] = Field(default_factory=list, max_length=1000,
                                      description="Woken tasks, claimed first")
    operators: list[Name] | None = Field(None, max_length=100, description="Operators this worker runs")
    limit: int = Field(1, ge=1, le=1000, description="At most this many tasks")


class ClaimedTask(BaseModel):
    """One attempt of a task, leased to a worker until ``lease_expires_at`` (what a claim gives)."""

    model_config = ConfigDict(frozen=True)

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


class LeasedTask(ClaimedTask):
    """A claimed task as the worker gets it: with the token its later calls present."""

    token: str = Field(description="Per-task token for /internal/heartbeat, /events, /task-complete")

    @classmethod
    def of(cls, claim: ClaimedTask, token: str) -> LeasedTask:
        return cls(**dict(claim), token=token)


class FetchResponse(BaseModel):
    tasks: list[LeasedTask]


class HeartbeatRequest(RequestBody):
    task_id: uuid.UUID
    attempt: Attempt
    logs: list[LogLine] = Field(default_factory=list, max_length=1000)


class HeartbeatResponse(BaseModel):
    status: Literal["ok", "canceled"]
    lease_expires_at: datetime | None
    token: str


class EventIn(RequestBody):
    dataset_id: Name
    partition_key: Name
    payload: JsonObject = Field(default_factory=dict)


class EventsRequest(RequestBody):
    task_id: uuid.UUID
    attempt: Attempt
    events: list[EventIn] = Field(min_length=1, max_length=100_000)


class EventsResponse(BaseModel):
    accepted: int
    tasks_created: int


class OutputIn(RequestBody):
    dataset_id: Name
    uri: Text = Field(min_length=1, max_length=2000)
    rows: int = Field(ge=0, le=MAX_BLOCK)
    bytes: int = Field(ge=0, le=MAX_BLOCK)
    block_start: int | None = Field(None, ge=0, le=MAX_BLOCK)
    block_end: int | None = Field(None, ge=0, le=MAX_BLOCK)
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$",
                               description="sha256 of the file's bytes (hex)")
    metadata: JsonObject | None = Field(None, max_length=64, description=(
        "The operator's own metadata about the file (at most 64 keys), kept in the manifest of the"
        " version it becomes part of"))


class CompleteRequest(RequestBody):
    task_id: uuid.UUID
    attempt: Attempt
    outcome: Outcome
    error: Text | None = Field(None, max_length=10_000)
    traceback: Text | None = Field(None, max_length=100_000)
    outputs: list[OutputIn] = Field(default_factory=list, max_length=10_000)
    logs: list[LogLine] = Field(default_factory=list, max_length=1000)


class CompleteResponse(BaseModel):
    status: Literal["ok", "canceled"]
