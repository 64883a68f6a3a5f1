"""What an operator sees of its task: payload, where to stage files, events, logs, cancel."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dispatcher.protocol import EventIn, LeasedTask, LogLine, OutputIn
from dispatcher.worker.client import DispatcherClient, Fenced

EVENTS_PER_CALL = 5_000


class Canceled(Exception):
    """The run was canceled: the operator stops at its next :meth:`TaskContext.check`."""


@dataclass(frozen=True)
class WorkerEnv:
    """Where operators find the outside world (the worker's configuration)."""

    object_dir: Path
    rpc_urls: Mapping[int, str] = field(default_factory=dict)  # chain id -> JSON-RPC URL
    confirmations: int = 10
    wait_confirmed_s: float = 120.0  # how long a chunk above the confirmed head waits before failing


@dataclass
class TaskContext:
    task: LeasedTask
    env: WorkerEnv
    client: DispatcherClient
    canceled: asyncio.Event = field(default_factory=asyncio.Event)
    logs: list[LogLine] = field(default_factory=list)
    fenced: Fenced | None = None  # set when the dispatcher said this attempt is over

    @property
    def task_id(self) -> uuid.UUID:
        return self.task.task_id

    @property
    def payload(self) -> dict[str, Any]:
        return self.task.payload

    @property
    def staging_dir(self) -> Path:
        """This attempt's own directory: no other attempt ever writes here, and nothing here is
        visible to readers unless the attempt commits (its files become ``task_outputs``)."""
        task = self.task
        return self.env.object_dir / "_staging" / str(task.run_id) / f"{task.task_id}.{task.attempt}"

    def log(self, level: str, message: str) -> None:
        self.logs.append(LogLine.model_validate({"level": level, "message": message[:10_000]}))

    def take_logs(self) -> list[LogLine]:
        taken, self.logs = self.logs[:1000], self.logs[1000:]
        return taken

    def check(self) -> None:
        if self.canceled.is_set():
            raise Canceled(f"task {self.task.task_id} was canceled")

    async def sleep(self, seconds: float) -> None:
        """Sleep, but wake (and raise :class:`Canceled`) as soon as the task is canceled."""
        try:
            await asyncio.wait_for(self.canceled.wait(), seconds)
        except TimeoutError:
            return
        self.check()

    async def emit(self, events: Sequence[EventIn]) -> int:
        """Hand events to the dispatcher (idempotent per partition); returns the tasks created."""
        created = 0
        for i in range(0, len(events), EVENTS_PER_CALL):
            self.check()
            created += (await self.client.events(self.task, events[i:i + EVENTS_PER_CALL])).tasks_created
        return created


Operator = Callable[[TaskContext], Awaitable[Sequence[OutputIn]]]
