"""Public endpoints: backfills, runs, tasks (bearer token)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Path, Query, Response

from dispatcher.api.deps import D, Public, problem
from dispatcher.api.models import (
    BackfillRequest,
    CancelView,
    EventAccepted,
    EventRequest,
    ManualRunRequest,
    OutputView,
    Problem,
    RunList,
    RunView,
    Submitted,
    TaskDetail,
    TaskList,
)
from dispatcher.backfill import BackfillRefused, submit_backfill
from dispatcher.signals import send_event, start_manual_run

router = APIRouter(prefix="/v1", responses={401: {"model": Problem}, 404: {"model": Problem},
                                            422: {"model": Problem}})

RunState = Literal["running", "succeeded", "failed", "canceling", "canceled"]
TaskState = Literal["queued", "leased", "succeeded", "dead", "canceled"]
IdempotencyKey = Annotated[str | None, Header(max_length=200, pattern=r"^[\x21-\x7e]+$",
                                              description="Same key, same run: a retried submit is harmless")]


@router.post("/backfills", status_code=201, response_model=Submitted, summary="Submit a backfill",
             responses={200: {"model": Submitted,
                              "description": "The run this Idempotency-Key already made"}})
async def post_backfill(body: BackfillRequest, d: D, actor: Public, response: Response,
                        idempotency_key: IdempotencyKey = None) -> Submitted:
    try:
        run_id, created = await submit_backfill(d.store, d.catalog, d.config.org_id, d.config.chains, body,
                                                submitted_by=actor, idempotency_key=idempotency_key)
    except BackfillRefused as exc:
        raise problem(422, "backfill_refused", str(exc)) from exc
    if not created:
        response.status_code = 200
    return _submitted(run_id, created)


def _submitted(run_id: uuid.UUID, created: bool) -> Submitted:
    return Submitted(run_id=run_id, created=created, status_url=f"/v1/runs/{run_id}")


@router.post("/dags/{dag}/runs", status_code=201, response_model=Submitted,
             summary="Start a run of a deployed DAG (its jobs with a manual trigger)",
             responses={200: {"model": Submitted,
                              "description": "The run this Idempotency-Key already made"}})
async def post_manual_run(dag: Annotated[str, Path(max_length=63, pattern=r"^[a-z][a-z0-9_]*$")], d: D,
                          actor: Public, response: Response, body: ManualRunRequest | None = None,
                          idempotency_key: IdempotencyKey = None) -> Submitted:
    submitted = await start_manual_run(d.store, d.config.org_id, dag, body.params if body else {},
                                       submitted_by=actor, idempotency_key=idempotency_key)
    if not submitted.created:
        response.status_code = 200
    return _submitted(submitted.run_id, submitted.created)


@router.post("/events", status_code=202, response_model=EventAccepted,
             summary="Send an external event to the DAGs' event triggers")
async def post_event(body: EventRequest, d: D, actor: Public) -> EventAccepted:
    accepted, key, runs = await send_event(d.store, d.config.org_id, body.name, body.key, body.payload,
                                           submitted_by=actor)
    return EventAccepted(accepted=accepted, key=key, runs=[_submitted(r.run_id, r.created) for r in runs])


@router.get("/runs", response_model=RunList, summary="Recent runs, newest first")
async def list_runs(d: D, _: Public, state: RunState | None = None,
                    limit: Annotated[int, Query(ge=1, le=500)] = 50) -> RunList:
    rows = await d.views.runs(d.config.org_id, state=state, limit=limit)
    return RunList(runs=[RunView(**r) for r in rows])


@router.get("/runs/{run_id}", response_model=RunView, summary="A run and its progress")
async def get_run(run_id: uuid.UUID, d: D, _: Public) -> RunView:
    return RunView(**await d.views.run(d.config.org_id, run_id))


@router.post("/runs/{run_id}/cancel", response_model=CancelView, summary="Cancel a run",
             description="Queued tasks end at once; running ones stop at their next heartbeat. "
                         "Canceling a finished run changes nothing.")
async def cancel_run(run_id: uuid.UUID, d: D, _: Public) -> CancelView:
    state = await d.store.cancel_run(d.config.org_id, run_id)
    return CancelView(run_id=run_id, state=state)


@router.get("/runs/{run_id}/tasks", response_model=TaskList, summary="The tasks of a run")
async def list_tasks(run_id: uuid.UUID, d: D, _: Public, state: TaskState | None = None,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                     offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> TaskList:
    rows = await d.views.tasks(d.config.org_id, run_id, state=state, limit=limit, offset=offset)
    return TaskList.model_validate({"tasks": rows})


@router.get("/runs/{run_id}/outputs", response_model=list[OutputView],
            summary="The committed files of a run (staged files of failed or stale attempts never appear)")
async def list_outputs(run_id: uuid.UUID, d: D, _: Public) -> list[OutputView]:
    await d.views.run(d.config.org_id, run_id)
    return [OutputView(**o) for o in await d.views.outputs(d.config.org_id, run_id)]


@router.get("/tasks/{task_id}", response_model=TaskDetail, summary="A task: attempts, errors, logs, outputs")
async def get_task(task_id: uuid.UUID, d: D, _: Public) -> TaskDetail:
    return TaskDetail.model_validate(await d.views.task(d.config.org_id, task_id))
