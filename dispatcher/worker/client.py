"""The worker's side of ``/internal/*``: fetch (claim) tasks, heartbeat, emit events, complete.

Transport failures and 503s are retried with a capped backoff (the dispatcher restarts, Postgres
fails over); a ``409`` means this attempt is fenced out and raises :class:`Fenced`; any other
error raises :class:`DispatcherRefused` with the API's own explanation.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Sequence
from typing import Any

import httpx

from dispatcher.protocol import (
    CompleteRequest,
    EventIn,
    EventsRequest,
    EventsResponse,
    FetchRequest,
    FetchResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    LeasedTask,
    LogLine,
    OutputIn,
)
from tracekit.errors import RetryableError, TraceError
from tracekit.retry import Backoff

_JITTER = random.Random()  # not the shared generator (see dispatcher.lease)
log = logging.getLogger("trace.worker")


class Fenced(TraceError):
    """This attempt no longer holds its task (stale, expired, finished or canceled)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


class DispatcherRefused(TraceError):
    """The dispatcher refused a request (4xx other than 409): a bug or a misconfiguration."""


class DispatcherClient:
    def __init__(self, base_url: str, worker_token: str, *, timeout_s: float = 30.0, retries: int = 6,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.worker_token = worker_token
        self.retries = retries
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_s, transport=transport)
        self._tokens: dict[tuple[uuid.UUID, int], str] = {}

    async def __aenter__(self) -> DispatcherClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(self, path: str, body: Any, token: str) -> dict[str, Any]:
        content = body.model_dump_json(exclude_none=False)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        backoff = Backoff(initial=0.1, maximum=5.0)
        for attempt in range(self.retries + 1):
            try:
                response = await self._http.post(path, content=content, headers=headers)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    data = response.json()
                    if not isinstance(data, dict):
                        raise DispatcherRefused(f"POST {path}: not a JSON object")
                    return data
                try:
                    payload = response.json()
                except ValueError:
                    payload = {"error": "http_error", "detail": response.text[:500]}
                code, detail = str(payload.get("error")), str(payload.get("detail"))
                if response.status_code == 409:
                    raise Fenced(code, detail)
                if response.status_code not in (429, 502, 503, 504):
                    raise DispatcherRefused(f"POST {path}: {response.status_code} {code}: {detail}")
                problem = f"{response.status_code} {code}"
            if attempt == self.retries:
                raise RetryableError(f"dispatcher unreachable at {self._http.base_url}{path}: {problem}")
            delay = backoff.next() * (0.5 + _JITTER.random() / 2)  # jitter: many workers, one dispatcher
            log.warning("POST %s failed (%s); retrying in %.1fs", path, problem, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _token(self, task: LeasedTask) -> str:
        return self._tokens.get((task.task_id, task.attempt), task.token)

    async def fetch(self, worker_id: str, *, limit: int, task_ids: Sequence[uuid.UUID] = (),
                    operators: Sequence[str] | None = None) -> list[LeasedTask]:
        body = FetchRequest(worker_id=worker_id, task_ids=list(task_ids), limit=limit,
                            operators=list(operators) if operators is not None else None)
        return FetchResponse.model_validate(await self._post("/internal/task-fetch", body,
                                                             self.worker_token)).tasks

    async def heartbeat(self, task: LeasedTask, logs: Sequence[LogLine] = ()) -> HeartbeatResponse:
        body = HeartbeatRequest(task_id=task.task_id, attempt=task.attempt, logs=list(logs))
        data = await self._post("/internal/heartbeat", body, self._token(task))
        answer = HeartbeatResponse.model_validate(data)
        self._tokens[(task.task_id, task.attempt)] = answer.token  # a fresh token, as long as it beats
        return answer

    async def events(self, task: LeasedTask, events: Sequence[EventIn]) -> EventsResponse:
        body = EventsRequest(task_id=task.task_id, attempt=task.attempt, events=list(events))
        return EventsResponse.model_validate(await self._post("/internal/events", body, self._token(task)))

    async def complete(self, task: LeasedTask, outcome: str, *, error: str | None = None,
                       traceback: str | None = None, outputs: Sequence[OutputIn] = (),
                       logs: Sequence[LogLine] = ()) -> str:
        body = CompleteRequest.model_validate({
            "task_id": task.task_id, "attempt": task.attempt, "outcome": outcome,
            "error": error[:10_000] if error else None,
            "traceback": traceback[-100_000:] if traceback else None,
            "outputs": list(outputs), "logs": list(logs)})
        try:
            answer = await self._post("/internal/task-complete", body, self._token(task))
        finally:
            self._tokens.pop((task.task_id, task.attempt), None)
        return str(answer["status"])
