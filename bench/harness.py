"""Shared plumbing of the benchmarks: an embedded stack on free ports, RSS sampling, a newHeads
watcher and percentiles. Each benchmark measures its own baseline in the same run."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import websockets

from devstack.anvil import AnvilSpec, start_anvil
from devstack.postgres import PostgresSpec, start_postgres, stop_postgres
from devstack.process import free_port
from devstack.tansu import TansuSpec, start_tansu
from tracekit.db import migrate

ROOT = Path(__file__).resolve().parents[1]
CHAIN_ID = 10143


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


class RssSampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.pids: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for name, pid in list(self.pids.items()):
                try:
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            kb = int(line.split()[1])
                            self.peak[name] = max(self.peak.get(name, 0), kb)
                except (FileNotFoundError, ProcessLookupError):
                    pass
            time.sleep(0.2)


class Stack:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.pg = PostgresSpec(data_dir=root / "pg", log_path=root / "pg.log", port=free_port())
        start_postgres(self.pg)
        migrate(self.pg.url)
        self.tansu_spec = TansuSpec(port=free_port())
        self.tansu = start_tansu(self.tansu_spec, root / "tansu.log")
        self.bootstrap = self.tansu_spec.bootstrap
        self.anvil_spec = AnvilSpec(port=free_port(), chain_id=CHAIN_ID, block_time=0.4, accounts=20)
        self.anvil = start_anvil(self.anvil_spec, root / "anvil.log")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def env(self, bootstrap: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_")}
        env.update(
            TRACE_CHAIN_ID=str(CHAIN_ID),
            TRACE_RPC_URL=self.anvil_spec.rpc_url,
            TRACE_WS_URL=self.anvil_spec.ws_url,
            TRACE_DATABASE_URL=self.pg.url,
            TRACE_KAFKA_BOOTSTRAP=bootstrap,
            TRACE_HOME=str(self.root),
            TRACE_SINK_WEB_PORT=str(free_port()),
            XDG_RUNTIME_DIR=str(self.root),
        )
        return env

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.root / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "tracecli", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        self.procs[name] = proc
        return proc

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)
        for proc in (self.anvil, self.tansu):
            proc.terminate()
            proc.wait(10)
        stop_postgres(self.pg.data_dir)


async def watch_heads(ws_url: str, arrivals: dict[str, float], stop: asyncio.Event) -> None:
    async with websockets.connect(ws_url, max_size=None) as ws:
        await ws.send(
            orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]})
        )
        while not stop.is_set():
            try:
                message = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            params = orjson.loads(message).get("params")
            if params:
                arrivals.setdefault(params["result"]["hash"], time.time())


