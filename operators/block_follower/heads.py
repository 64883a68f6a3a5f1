"""Head tracking: WebSocket ``newHeads`` when the node offers it, polling otherwise (and as a
safety net, since a same-height replacement such as ``anvil_reorg`` announces no new head)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import orjson
import websockets

from operators.block_follower.fetch import ChainReader, Header, header_of
from tracekit.errors import RetryableError
from tracekit.retry import Backoff

log = logging.getLogger(__name__)


class HeadWatcher:
    """``await watcher.changed()`` returns when the head (number or hash) differs from the last seen."""

    def __init__(self, reader: ChainReader, ws_url: str | None, poll_interval: float) -> None:
        self.reader = reader
        self.ws_url = ws_url
        self.poll_interval = poll_interval
        self.latest: Header | None = None
        self.arrivals: dict[str, int] = {}  # block hash -> unix ms when we first saw it
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.ws_connected = False

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._poll_loop(), name="heads-poll"))
        if self.ws_url:
            self._tasks.append(asyncio.create_task(self._ws_loop(), name="heads-ws"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _offer(self, header: Header) -> None:
        self.arrivals.setdefault(header.ref.hash, int(time.time() * 1000))
        if len(self.arrivals) > 4096:
            for key in list(self.arrivals)[:2048]:
                del self.arrivals[key]
        if self.latest is None or header.ref != self.latest.ref:
            self.latest = header
            self._changed.set()

    async def changed(self, timeout: float) -> Header | None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
        self._changed.clear()
        return self.latest

    async def _poll_loop(self) -> None:
        while True:
            interval = self.poll_interval if not self.ws_connected else max(self.poll_interval, 0.25)
            try:
                self._offer(await self.reader.head())
            except RetryableError as exc:
                log.warning("head poll failed: %s", exc)
                await asyncio.sleep(1.0)
            await asyncio.sleep(interval)

    async def _ws_loop(self) -> None:
        assert self.ws_url is not None  # noqa: S101 - started only with a URL
        backoff = Backoff(0.5, 10.0)
        while True:
            try:
                async with websockets.connect(self.ws_url, max_size=None, ping_interval=20) as ws:
                    await ws.send(orjson.dumps(
                        {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}
                    ))
                    self.ws_connected = True
                    backoff.reset()
                    async for message in ws:
                        payload = orjson.loads(message)
                        params = payload.get("params") if isinstance(payload, dict) else None
                        if isinstance(params, dict) and isinstance(params.get("result"), dict):
                            self._offer(header_of(params["result"], "newHeads"))
            except (OSError, websockets.WebSocketException, orjson.JSONDecodeError, RetryableError) as exc:
                log.info("newHeads subscription unavailable (%s); polling", exc)
            finally:
                self.ws_connected = False
            await asyncio.sleep(backoff.next())
