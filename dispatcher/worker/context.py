"""What an operator sees of its task: payload, where to stage files, events, logs, cancel.

Files go to the worker's object store (:class:`~tracekit.objects.ObjectStore`: S3 or a directory)
under the attempt's own staging prefix ``_staging/<run>/<task>.<attempt>/``; no other attempt
writes there, and nothing there is visible to readers unless the attempt commits (its files
become ``task_outputs``, each with its URL, size and sha256).
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dispatcher.protocol import EventIn, LeasedTask, LogLine, OutputIn
from dispatcher.worker.client import DispatcherClient, Fenced
from tracekit.objects import ObjectStore, check_key

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

EVENTS_PER_CALL = 5_000


class Canceled(Exception):
    """The run was canceled: the operator stops at its next :meth:`TaskContext.check`."""


@dataclass(frozen=True)
class WorkerEnv:
    """Where operators find the outside world (the worker's configuration)."""

    store: ObjectStore  # where tasks stage their files
    store_url: str  # what the store was opened from (TRACE_OBJECT_STORE), for messages
    rpc_urls: Mapping[int, str] = field(default_factory=dict)  # chain id -> JSON-RPC URL
    confirmations: int = 10
    wait_confirmed_s: float = 120.0  # how long a chunk above the confirmed head waits before failing
    database_url: str | None = None  # the hot tables the aggregator reads (None: it cannot run here)
    # opens the Iceberg catalog of the datasets (tracekit.iceberg.open_catalog; the caller closes
    # it); None: operators that read or write Iceberg tables cannot run here
    open_catalog: Callable[[], Catalog] | None = None


def store_uri(store: ObjectStore, key: str) -> str:
    """The URL a reader opens ``key`` at: ``s3://bucket/prefix/key``, or a ``file://`` URL."""
    url = store.url(key)
    return url if "://" in url else Path(url).as_uri()


@dataclass(frozen=True)
class StagedObject:
    """A file an attempt put under its staging prefix."""

    key: str
    uri: str
    bytes: int
    sha256: str


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
    def staging_prefix(self) -> str:
        """This attempt's own key prefix in the store, ``_staging/<run>/<task>.<attempt>/``: no
        other attempt ever writes here, and nothing here is visible to readers unless the attempt
        commits (its files become ``task_outputs``)."""
        task = self.task
        return f"_staging/{task.run_id}/{task.task_id}.{task.attempt}/"

    def uri(self, key: str) -> str:
        """The URL of ``key`` in the worker's store (what ``task_outputs.uri`` records)."""
        return store_uri(self.env.store, key)

    async def stage_bytes(self, name: str, data: bytes) -> StagedObject:
        """Put ``data`` as ``name`` under :attr:`staging_prefix` (off the event loop)."""
        key = check_key(self.staging_prefix + name)
        await asyncio.to_thread(self.env.store.put, key, data)
        return StagedObject(key, self.uri(key), len(data), hashlib.sha256(data).hexdigest())

    async def stage_file(self, name: str, path: Path) -> StagedObject:
        """Upload the local file ``path`` as ``name`` under :attr:`staging_prefix` (multipart on S3
        when it is large), off the event loop."""
        key = check_key(self.staging_prefix + name)

        def upload() -> tuple[int, str]:
            digest, size = hashlib.sha256(), 0
            with path.open("rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
                    size += len(block)
            self.env.store.put_file(key, path)
            return size, digest.hexdigest()

        size, sha256 = await asyncio.to_thread(upload)
        return StagedObject(key, self.uri(key), size, sha256)

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
