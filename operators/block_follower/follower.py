"""The block follower: the I/O shell around the reorg state machine.

Each round: read the head, drive :func:`advance` with batched JSON-RPC, produce the events it
returns (reorg first, then blocks) keyed by chain id onto the chain's single-partition topic,
and, once the broker confirmed every one of them, commit window + cursor to Postgres. Rounds are
pipelined: the next batch is fetched while the previous one is being confirmed; commits stay in
order. Any failure of delivery or of the cursor write ends the process (crash-only): the
supervisor restarts it and it resumes from the cursor, re-emitting at most what was unconfirmed,
under the same idempotency keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import deque
from collections.abc import Generator, Sequence
from typing import Any

from prometheus_client import start_http_server

from operators.block_follower import metrics
from operators.block_follower.config import FollowerConfig
from operators.block_follower.fetch import ChainReader, Header
from operators.block_follower.heads import HeadWatcher
from operators.block_follower.reorg import ChainWindow, Event, Fetch, NewBlock, Reorg, advance
from operators.block_follower.store import CursorStore
from operators.block_follower.transform import FetchedBlock, reorg_record
from tracekit.avro.wire import AvroCodec
from tracekit.errors import RetryableError
from tracekit.jsonrpc import RpcClient
from tracekit.kafka import EventProducer, ensure_topics
from tracekit.names import BLOCK, REORG

log = logging.getLogger("trace.follower")

MAX_IN_FLIGHT_ROUNDS = 4


class BlockFollower:
    def __init__(
        self,
        config: FollowerConfig,
        reader: ChainReader,
        store: CursorStore,
        producer: EventProducer,
        codec: AvroCodec,
    ) -> None:
        self.config = config
        self.reader = reader
        self.store = store
        self.producer = producer
        self.codec = codec
        self.chain = str(config.chain_id)
        self.key = self.chain.encode()
        self.window = ChainWindow(config.window)
        self.watcher = HeadWatcher(reader, config.ws_url, config.poll_interval)
        self._commits: deque[asyncio.Task[None]] = deque()
        self.confirmed_tip_timestamp: int | None = None
        self._prefetch: tuple[tuple[int, ...], asyncio.Task[list[FetchedBlock | None]]] | None = None

    # -- the loop ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        await self.reader.check_chain_id()
        ensure_topics(self.config.kafka_bootstrap, {self.config.topic: 1})
        await self._reload_window()
        self.watcher.start()
        try:
            head = await self.reader.head()
            while not stop.is_set():
                latest = self.watcher.latest or head
                head = latest
                metrics.HEAD.labels(self.chain).set(head.ref.number)
                try:
                    events = await self._drive(head)
                except RetryableError as exc:
                    metrics.RPC_ERRORS.labels(self.chain).inc()
                    log.warning("round failed, retrying from the cursor: %s", exc)
                    await self._recover()
                    await asyncio.sleep(0.5)
                    continue
                if events:
                    self._prefetch_next(head)
                    self._emit(events, head)
                await self._reap_commits(block=len(self._commits) > MAX_IN_FLIGHT_ROUNDS)
                caught_up = self.window.tip is not None and self.window.tip.number >= head.ref.number
                if caught_up or not events:
                    await self.watcher.changed(timeout=1.0)
        finally:
            await self.watcher.stop()
            with contextlib.suppress(Exception):
                await self._reap_commits(block=True, wait_all=True)

    async def _drive(self, head: Header) -> list[Event[FetchedBlock]]:
        gen: Generator[Fetch, Sequence[Any], list[Event[FetchedBlock]]] = advance(
            self.window, head.ref, max_blocks=self.config.batch_size, start=self.config.start_block
        )
        try:
            request = next(gen)
            while True:
                reply: Sequence[Any]
                if request.full:
                    reply = await self._blocks(request.numbers)
                else:
                    reply = await self.reader.headers(request.numbers)
                request = gen.send(reply)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        except BaseException:
            gen.close()
            raise

    def _prefetch_next(self, head: Header) -> None:
        """While far behind, fetch the next batch during this one's encoding and delivery.

        Only a speed-up: what a prefetch returns goes through the state machine like any fetch,
        so a block the chain dropped meanwhile is caught by the parent-hash check.
        """
        tip = self.window.tip
        if tip is None or head.ref.number - tip.number <= self.config.batch_size:
            return
        numbers = tuple(range(tip.number + 1, tip.number + 1 + self.config.batch_size))
        if self._prefetch is None or self._prefetch[0] != numbers:
            task = asyncio.create_task(self.reader.blocks(numbers, self.watcher.arrivals))
            task.add_done_callback(_retrieve)  # a discarded prefetch's error is not news
            self._prefetch = (numbers, task)

    async def _blocks(self, numbers: tuple[int, ...]) -> list[FetchedBlock | None]:
        prefetched, self._prefetch = self._prefetch, None
        if prefetched is not None:
            if prefetched[0] == numbers:
                return await prefetched[1]
            prefetched[1].cancel()
        return await self.reader.blocks(numbers, self.watcher.arrivals)

    def _emit(self, events: list[Event[FetchedBlock]], head: Header) -> None:
        futures = []
        now_ms = int(time.time() * 1000)
        for event in events:
            if isinstance(event, Reorg):
                record = reorg_record(self.config.chain_id, event, now_ms)
                value = self.codec.encode(REORG, record)
                kind = b"reorg"
                log.info("reorg at %d, depth %d", event.ancestor.number, event.depth)
            else:
                record = event.block.record
                value = self.codec.encode(BLOCK, record)
                kind = b"block"
            headers = [
                ("trace-idempotency-key", str(record["idempotency_key"]).encode()),
                ("trace-type", kind),
            ]
            futures.append(self.producer.produce(self.config.topic, self.key, value, headers))
        previous = self._commits[-1] if self._commits else None
        self._commits.append(asyncio.create_task(self._confirm(previous, futures, events, head)))

    async def _confirm(
        self,
        previous: asyncio.Task[None] | None,
        futures: list[asyncio.Future[None]],
        events: list[Event[FetchedBlock]],
        head: Header,
    ) -> None:
        await asyncio.gather(*futures)
        if previous is not None:
            await previous  # commits stay in chain order
        await self.store.commit(events, head.ref)
        for event in events:
            if isinstance(event, Reorg):
                metrics.REORGS.labels(self.chain, str(event.depth)).inc()
                metrics.REORG_DEPTH.labels(self.chain).observe(event.depth)
                metrics.EVENTS.labels(self.chain, "reorg").inc()
            elif isinstance(event, NewBlock):
                metrics.EVENTS.labels(self.chain, "block").inc()
                self.confirmed_tip_timestamp = int(event.block.record["timestamp"])
                metrics.CURSOR.labels(self.chain).set(event.block.ref.number)
        cursor = next((e.block.ref.number for e in reversed(events) if isinstance(e, NewBlock)), None)
        if cursor is not None:
            metrics.LAG_BLOCKS.labels(self.chain).set(max(0, head.ref.number - cursor))
            if self.confirmed_tip_timestamp is not None:
                lag = max(0, head.timestamp - self.confirmed_tip_timestamp)
                metrics.LAG_SECONDS.labels(self.chain).set(lag)

    async def _reap_commits(self, *, block: bool, wait_all: bool = False) -> None:
        """Raise the first failed commit; wait for the oldest when too many are in flight."""
        while self._commits and (self._commits[0].done() or block):
            task = self._commits.popleft()
            await task  # re-raises a delivery or database failure: the process ends
            block = wait_all

    async def _recover(self) -> None:
        if self._prefetch is not None:
            self._prefetch[1].cancel()
            self._prefetch = None
        await self._reap_commits(block=True, wait_all=True)
        await self._reload_window()

    async def _reload_window(self) -> None:
        self.window = ChainWindow.of(await self.store.load_window(), self.config.window)


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def run_follower(config: FollowerConfig, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or SIGTERM/SIGINT)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=config.metrics_host)
    codec = AvroCodec(registry_url=config.schema_registry_url, topic=config.topic)
    async with RpcClient(config.rpc_url) as rpc:
        reader = ChainReader(rpc, config.chain_id)
        await reader.check_chain_id()
        store = await CursorStore.connect(
            config.database_url.get_secret_value(), config.chain_id, config.window
        )
        producer = EventProducer(config.kafka_bootstrap, client_id=f"trace-follower-{config.chain_id}")
        try:
            await BlockFollower(config, reader, store, producer, codec).run(stop)
        finally:
            producer.close()
            await store.close()
