"""The worker: wake-ups in, leased tasks run with heartbeats, completions out.

- A wake-up is a task id on the ``tasks`` queue. The worker claims the woken tasks (and any other
  claimable ones, up to its free slots) in one ``/internal/task-fetch``, then acks the wake-ups:
  a wake-up of a task someone else holds, or that already finished, just means nothing. A body
  that is not a task id is nacked and ends in the queue's dead place.
- Without wake-ups it still asks every ``idle_poll_s`` (retries whose backoff ran out, lost
  wake-ups), so the queue is never needed for correctness.
- Each task runs with a heartbeat every third of its lease. ``canceled`` from the heartbeat stops
  the operator and acknowledges the cancel; a fenced answer (409: stale or expired) stops it
  without committing anything.
- :meth:`Worker.stop` (SIGTERM) stops taking tasks, interrupts the running ones and hands them
  back (``released``), so another worker takes them at once, without counting a failure.
- An attempt that will not commit (failed, canceled, fenced, released) deletes what it staged
  under its prefix in the object store, best effort; files of a worker that died stay staged
  but are never reported, so no reader sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from dispatcher.protocol import TASK_QUEUE, LeasedTask, OutputIn
from dispatcher.queue import QueueDriver
from dispatcher.queue.driver import Delivery
from dispatcher.worker.client import DispatcherClient, Fenced
from dispatcher.worker.context import Canceled, Operator, TaskContext, WorkerEnv
from tracekit.errors import ObjectStoreError, RetryableError

log = logging.getLogger("trace.worker")


@dataclass
class WorkerStats:
    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    canceled: int = 0
    fenced: int = 0
    released: int = 0
    poison: int = 0
    wakeups: int = 0


@dataclass
class Worker:
    worker_id: str
    client: DispatcherClient
    queue: QueueDriver
    operators: Mapping[str, Operator]
    env: WorkerEnv
    slots: int = 4
    idle_poll_s: float = 2.0
    stats: WorkerStats = field(default_factory=WorkerStats)
    _running: dict[uuid.UUID, asyncio.Task[None]] = field(default_factory=dict)
    _work: dict[uuid.UUID, asyncio.Task[list[OutputIn]]] = field(default_factory=dict)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _slot_free: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def running(self) -> int:
        return len(self._running)

    async def run(self) -> None:
        """Until :meth:`stop`: take tasks and run them; then release what is still running."""
        loop = asyncio.get_running_loop()
        last_fetch = 0.0
        try:
            while not self._stopping.is_set():
                free = self.slots - len(self._running)
                if free <= 0:
                    self._slot_free.clear()
                    await self._wait(self._slot_free, self.idle_poll_s)
                    continue
                try:
                    wait = max(0.05, self.idle_poll_s - (loop.time() - last_fetch))
                    deliveries = await self.queue.receive(TASK_QUEUE, max_messages=free, wait_s=wait)
                except RetryableError as exc:
                    log.warning("queue receive failed: %s", exc)
                    deliveries = []
                    await self._wait(self._stopping, 1.0)
                if self._stopping.is_set():
                    break  # unacked wake-ups come back after their visibility timeout
                woken = await self._task_ids(deliveries)
                if not woken and loop.time() - last_fetch < self.idle_poll_s:
                    continue
                last_fetch = loop.time()
                try:
                    tasks = await self.client.fetch(self.worker_id, limit=free, task_ids=woken,
                                                    operators=sorted(self.operators))
                except RetryableError as exc:
                    log.warning("task fetch failed: %s", exc)
                    continue  # the wake-ups stay unacked and come back
                if deliveries:
                    await self.queue.ack([d for d in deliveries if _task_id(d) is not None])
                for task in tasks:
                    self.stats.claimed += 1
                    self._running[task.task_id] = asyncio.create_task(self._run_task(task),
                                                                      name=f"task-{task.task_id}")
        finally:
            await self._release_all()

    def stop(self) -> None:
        self._stopping.set()

    async def _wait(self, event: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    async def _task_ids(self, deliveries: list[Delivery]) -> list[uuid.UUID]:
        ids: list[uuid.UUID] = []
        for d in deliveries:
            self.stats.wakeups += 1
            task_id = _task_id(d)
            if task_id is None:
                self.stats.poison += 1
                log.warning("wake-up %r is not a task id: nacked", d.body[:80])
                await self.queue.nack(d, f"not a task id: {d.body[:80]!r}")
            elif task_id not in ids:
                ids.append(task_id)
        return ids

    async def _release_all(self) -> None:
        """Interrupt every running operator; each runner then hands its task back."""
        for work in list(self._work.values()):
            work.cancel()
        await asyncio.gather(*list(self._running.values()), return_exceptions=True)

    async def _run_task(self, task: LeasedTask) -> None:
        ctx = TaskContext(task, self.env, self.client)
        work = asyncio.create_task(self._operate(self.operators.get(task.operator), ctx),
                                   name=f"op-{task.task_id}")
        self._work[task.task_id] = work
        beat = asyncio.create_task(self._heartbeat(ctx, work), name=f"hb-{task.task_id}")
        outcome, error, tb = "succeeded", None, None
        outputs: list[OutputIn] = []
        try:
            try:
                outputs = list(await work)
            except Canceled:
                outcome = "canceled"
            except Fenced as exc:  # an emit was refused: this attempt is over
                ctx.fenced = exc
                outcome = "fenced"
            except asyncio.CancelledError:
                if ctx.fenced is not None:
                    outcome = "fenced"
                elif ctx.canceled.is_set():
                    outcome = "canceled"
                elif self._stopping.is_set():
                    outcome = "released"
                else:
                    raise
            except Exception as exc:
                outcome = "failed"
                error = f"{type(exc).__name__}: {exc}"
                tb = traceback.format_exc()
                ctx.log("error", error)
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            if outcome != "succeeded":
                await self._discard(ctx)
            if outcome == "fenced":
                self.stats.fenced += 1
                log.info("task %s attempt %s fenced out (%s): nothing committed", task.task_id, task.attempt,
                         ctx.fenced)
                return
            try:
                status = await self.client.complete(task, outcome, error=error, traceback=tb, outputs=outputs,
                                                    logs=ctx.take_logs())
            except Fenced as exc:
                self.stats.fenced += 1
                log.info("task %s attempt %s: completion refused (%s)", task.task_id, task.attempt, exc)
                await self._discard(ctx)
                return
            except RetryableError as exc:  # the lease runs out and the reaper retries the task
                log.error("task %s: could not report %s: %s", task.task_id, outcome, exc)
                return
            counted = "canceled" if status == "canceled" else outcome
            setattr(self.stats, counted, getattr(self.stats, counted) + 1)
        finally:
            beat.cancel()
            work.cancel()
            self._work.pop(task.task_id, None)
            self._running.pop(task.task_id, None)
            self._slot_free.set()

    async def _operate(self, operator: Operator | None, ctx: TaskContext) -> list[OutputIn]:
        if operator is None:
            raise LookupError(f"this worker has no operator {ctx.task.operator!r}")
        return list(await operator(ctx))

    async def _heartbeat(self, ctx: TaskContext, work: asyncio.Task[list[OutputIn]]) -> None:
        task = ctx.task
        expires = task.lease_expires_at
        while not work.done():
            lease_left = (expires - datetime.now(UTC)).total_seconds()
            await asyncio.sleep(max(0.2, min(lease_left / 3, 10.0)))
            if work.done():
                return
            try:
                answer = await self.client.heartbeat(task, ctx.take_logs())
            except Fenced as exc:
                ctx.fenced = exc
                work.cancel()  # stale or expired: stop now, commit nothing
                return
            except RetryableError as exc:
                log.warning("task %s: heartbeat failed: %s", task.task_id, exc)
                continue
            if answer.lease_expires_at is not None:
                expires = answer.lease_expires_at
            if answer.status == "canceled":
                ctx.canceled.set()
                work.cancel()
                return

    async def _discard(self, ctx: TaskContext) -> None:
        """Files of an attempt that will not commit are garbage: delete its staging prefix (best
        effort: a store that fails now leaves them staged, where no reader looks)."""
        store, prefix = self.env.store, ctx.staging_prefix

        def delete() -> None:
            store.delete([key for key, _ in store.list(prefix)])

        try:
            await asyncio.to_thread(delete)
        except ObjectStoreError as exc:
            log.warning("task %s attempt %s: could not delete its staged files (%s in %s): %s",
                        ctx.task.task_id, ctx.task.attempt, prefix, self.env.store_url, exc)


def _task_id(delivery: Delivery) -> uuid.UUID | None:
    try:
        text = delivery.body.decode("ascii")
        return uuid.UUID(text) if len(text) == 36 else None
    except (UnicodeDecodeError, ValueError):
        return None
