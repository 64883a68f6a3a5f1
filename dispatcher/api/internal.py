"""Worker endpoints (``/internal/*``): fetch (claim) tasks, heartbeat, emit events, complete.

``task-fetch`` takes the worker credential and hands out, per leased task, a short-lived token
naming that attempt and the datasets it may read and write. The other three take that token,
and every call is fenced in Postgres: a stale attempt gets ``409 stale_attempt`` and changes
nothing.
"""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter

from dispatcher import tokens
from dispatcher.api.deps import D, Deps, TaskToken, Worker, problem
from dispatcher.api.models import Problem
from dispatcher.completion import Completion, Output
from dispatcher.errors import NotAllowed
from dispatcher.lease import Fence
from dispatcher.protocol import (
    CompleteRequest,
    CompleteResponse,
    EventsRequest,
    EventsResponse,
    FetchRequest,
    FetchResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    LeasedTask,
)
from dispatcher.store import Event

router = APIRouter(prefix="/internal", tags=["workers"],
                   responses={401: {"model": Problem}, 403: {"model": Problem}, 404: {"model": Problem},
                              409: {"model": Problem}, 422: {"model": Problem}})

_FENCE_DETAIL = {
    Fence.STALE: "another attempt holds this task: stop without committing anything",
    Fence.EXPIRED: "the lease expired: the task will be retried; stop without committing anything",
    Fence.FINISHED: "the task has already finished",
    Fence.CANCELED: "the task was canceled",
}


def _check(claims: tokens.TaskClaims, task_id: uuid.UUID, attempt: int) -> None:
    if claims.task_id != task_id or claims.attempt != attempt:
        raise problem(403, "token_mismatch", "the task token names another task or attempt")


def _refuse(verdict: Fence) -> None:
    if verdict is not Fence.OK:
        raise problem(409, f"{verdict.value}_attempt" if verdict in (Fence.STALE, Fence.EXPIRED)
                      else f"task_{verdict.value}", _FENCE_DETAIL[verdict])


def _token(d: Deps, claims: tokens.TaskClaims) -> str:
    return tokens.issue(d.config.task_secret, task_id=claims.task_id, attempt=claims.attempt,
                        org_id=claims.org_id, reads=claims.reads, writes=claims.writes, now=time.time(),
                        ttl=d.config.token_ttl_s)


@router.post("/task-fetch", response_model=FetchResponse, summary="Lease tasks (woken ones first)")
async def task_fetch(body: FetchRequest, d: D, _: Worker) -> FetchResponse:
    claimed = await d.store.claim(body.worker_id, limit=body.limit, operators=body.operators,
                                  prefer=body.task_ids, org_id=d.config.org_id)
    now = time.time()
    return FetchResponse(tasks=[
        LeasedTask.of(c, tokens.issue(d.config.task_secret, task_id=c.task_id, attempt=c.attempt,
                                      org_id=c.org_id, reads=c.reads, writes=c.writes, now=now,
                                      ttl=d.config.token_ttl_s))
        for c in claimed
    ])


@router.post("/heartbeat", response_model=HeartbeatResponse,
             summary="Extend the lease; answers 'canceled' when the task should stop")
async def heartbeat(body: HeartbeatRequest, d: D, claims: TaskToken) -> HeartbeatResponse:
    _check(claims, body.task_id, body.attempt)
    verdict, expires = await d.store.heartbeat(body.task_id, body.attempt,
                                               [(line.level, line.message) for line in body.logs])
    if verdict is Fence.CANCELED:
        return HeartbeatResponse(status="canceled", lease_expires_at=expires, token=_token(d, claims))
    _refuse(verdict)
    return HeartbeatResponse(status="ok", lease_expires_at=expires, token=_token(d, claims))


@router.post("/events", response_model=EventsResponse,
             summary="Emit events (new partitions of output datasets); idempotent per partition")
async def events(body: EventsRequest, d: D, claims: TaskToken) -> EventsResponse:
    _check(claims, body.task_id, body.attempt)
    undeclared = sorted({e.dataset_id for e in body.events} - set(claims.writes))
    if undeclared:
        raise problem(403, "dataset_not_allowed", f"this task may not write {', '.join(undeclared)}")
    try:
        result = await d.store.emit_events(
            body.task_id, body.attempt,
            [Event(e.dataset_id, e.partition_key, e.payload) for e in body.events])
    except NotAllowed as exc:
        raise problem(403, "dataset_not_allowed", str(exc)) from exc
    _refuse(result.fence)
    return EventsResponse(accepted=result.accepted, tasks_created=result.tasks_created)


@router.post("/task-complete", response_model=CompleteResponse,
             summary="End the attempt: succeeded (commits outputs), failed, canceled or released")
async def task_complete(body: CompleteRequest, d: D, claims: TaskToken) -> CompleteResponse:
    _check(claims, body.task_id, body.attempt)
    undeclared = sorted({o.dataset_id for o in body.outputs} - set(claims.writes))
    if undeclared:
        raise problem(403, "dataset_not_allowed", f"this task may not write {', '.join(undeclared)}")
    completion = Completion(
        body.task_id, body.attempt, body.outcome, body.error, body.traceback,
        outputs=[Output(o.dataset_id, o.uri, o.rows, o.bytes, o.block_start, o.block_end, o.sha256,
                        o.metadata) for o in body.outputs],
        logs=[(line.level, line.message) for line in body.logs],
    )
    try:
        verdict = await d.store.complete(completion)
    except NotAllowed as exc:
        raise problem(403, "dataset_not_allowed", str(exc)) from exc
    if verdict is Fence.CANCELED:
        return CompleteResponse(status="canceled")
    _refuse(verdict)
    return CompleteResponse(status="ok")
