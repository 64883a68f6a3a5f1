"""Test harness: a chain of its own (anvil, unique chain id), a database of its own, and the
follower, sinks and enrichment worker as real subprocesses, on the session's Postgres and broker."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from devstack.anvil import AnvilSpec, start_anvil
from devstack.process import free_port
from tracekit.db import migrate

_chain_ids = itertools.count(31000)


def rpc(url: str, method: str, *params: Any) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        reply = json.loads(resp.read())
    if "error" in reply:
        raise RuntimeError(f"{method}: {reply['error']}")
    return reply["result"]


@dataclass
class Pipeline:
    root: Path
    chain_id: int
    rpc_url: str
    ws_url: str
    database_url: str
    kafka_bootstrap: str
    anvil: subprocess.Popen[bytes]
    follower_metrics_port: int = field(default_factory=free_port)
    sink_metrics_port: int = field(default_factory=free_port)
    sink_web_port: int = field(default_factory=free_port)
    enrich_web_port: int = field(default_factory=free_port)
    transfer_sink_metrics_port: int = field(default_factory=free_port)
    transfer_sink_web_port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)

    @property
    def topic(self) -> str:
        return f"trace.chain.{self.chain_id}.blocks"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_")}
        env.update(
            TRACE_CHAIN_ID=str(self.chain_id),
            TRACE_RPC_URL=self.rpc_url,
            TRACE_WS_URL=self.ws_url,
            TRACE_DATABASE_URL=self.database_url,
            TRACE_KAFKA_BOOTSTRAP=self.kafka_bootstrap,
            TRACE_HOME=str(self.root),
            TRACE_SINK_WEB_PORT=str(self.sink_web_port),
            TRACE_FOLLOWER_METRICS_PORT=str(self.follower_metrics_port),
            TRACE_SINK_METRICS_PORT=str(self.sink_metrics_port),
            TRACE_ENRICH_WEB_PORT=str(self.enrich_web_port),
            TRACE_TRANSFER_SINK_METRICS_PORT=str(self.transfer_sink_metrics_port),
            TRACE_TRANSFER_SINK_WEB_PORT=str(self.transfer_sink_web_port),
        )
        return env

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        n = self.restarts.get(name, 0)
        self.restarts[name] = n + 1
        with (self.root / f"{name}.{n}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tracecli", *args],
                env=self.env(), stdout=log, stderr=subprocess.STDOUT,
            )
        self.procs[name] = proc
        return proc

    def start_follower(self) -> None:
        self.start("follower", "follower", "run", "--from-block", "0")

    def start_sink(self) -> None:
        self.start("sink", "sink", "run")

    def start_enrich(self) -> None:
        self.start("enrich", "enrich", "run")

    def start_transfer_sink(self) -> None:
        self.start("transfer-sink", "transfer-sink", "run")

    def kill9(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()
        self.anvil.terminate()
        self.anvil.wait(10)

    def assert_running(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                found = sorted(self.root.glob(f"{name}.*.log"))
                logs = found[-1].read_text()[-3000:] if found else f"(no {name}.*.log in {self.root})"
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{logs}")

    def db(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.database_url, autocommit=True)

    def cursor(self) -> int | None:
        with self.db() as conn:
            row = conn.execute(
                "SELECT block_number FROM state.follower_cursor WHERE chain_id = %s", (self.chain_id,)
            ).fetchone()
        return None if row is None else int(row[0])

    def sink_tip(self) -> int | None:
        with self.db() as conn:
            row = conn.execute(
                "SELECT max(block_number) FROM hot.blocks WHERE chain_id = %s", (self.chain_id,)
            ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def metrics(self, port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """A Prometheus endpoint's samples, keyed by (name, labels)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                series, _, value = line.rpartition(" ")
                name, _, labels = series.partition("{")
                samples[(name, frozenset(re.findall(r'(\w+)="([^"]*)"', labels)))] = float(value)
        return samples

    def sample(self, port: int, name: str, **labels: str) -> float | None:
        return self.metrics(port).get((name, frozenset(labels.items())))

    def head(self) -> int:
        return int(rpc(self.rpc_url, "eth_blockNumber"), 16)

    def wait_for(self, what: str, check: Any, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.assert_running()
            if check():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what} (head {self.head()}, cursor {self.cursor()}, "
                             f"sink tip {self.sink_tip()})")

    def settle(self, timeout: float = 60.0) -> int:
        """Stop mining, then wait until the cursor and the hot tables reach the head."""
        rpc(self.rpc_url, "anvil_setIntervalMining", 0)
        head = self.head()
        self.wait_for("follower and sink to reach the head",
                      lambda: self.cursor() == head and self.sink_tip() == head, timeout)
        return head

    def mismatches(self, upto: int) -> list[str]:
        """Heights 0..upto where the hot tables differ from the node (hash, parent, tx and log counts)."""
        with self.db() as conn:
            blocks = {
                n: (h, p, t, lg)
                for n, h, p, t, lg in conn.execute(
                    "SELECT block_number, block_hash, parent_hash, tx_count, log_count FROM hot.blocks"
                    " WHERE chain_id = %s AND block_number <= %s", (self.chain_id, upto))
            }
            txs = dict(conn.execute(
                "SELECT block_number, count(*) FROM hot.transactions WHERE chain_id = %s GROUP BY 1",
                (self.chain_id,)).fetchall())
            logs = dict(conn.execute(
                "SELECT block_number, count(*) FROM hot.logs WHERE chain_id = %s GROUP BY 1",
                (self.chain_id,)).fetchall())
        problems = []
        for n in range(upto + 1):
            for _ in range(20):  # anvil may answer null for a moment while it rewrites a reorged tail
                node = rpc(self.rpc_url, "eth_getBlockByNumber", hex(n), False)
                receipts = rpc(self.rpc_url, "eth_getBlockReceipts", hex(n))
                if node is not None and receipts is not None:
                    break
                time.sleep(0.1)
            assert node is not None and receipts is not None, f"the node has no block {n}"
            node_logs = sum(len(r["logs"]) for r in receipts)
            want = (node["hash"], node["parentHash"], len(node["transactions"]), node_logs)
            got = blocks.get(n)
            if got != want or txs.get(n, 0) != want[2] or logs.get(n, 0) != want[3]:
                problems.append(f"block {n}: hot {got} tx rows {txs.get(n, 0)} log rows {logs.get(n, 0)}"
                                f" != node {want}")
        return problems


def make_pipeline(root: Path, admin_url: str, kafka_bootstrap: str, block_time: float = 0.4) -> Pipeline:
    chain_id = next(_chain_ids) + os.getpid() % 500 * 10
    spec = AnvilSpec(port=free_port(), chain_id=chain_id, block_time=block_time)
    anvil = start_anvil(spec, root / "anvil.log")
    dbname = f"trace_{chain_id}"
    database_url = admin_url.rsplit("/", 1)[0] + f"/{dbname}"
    try:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}"')
            conn.execute(f'CREATE DATABASE "{dbname}"')
        migrate(database_url)
    except BaseException:
        anvil.terminate()
        anvil.wait(10)
        raise
    return Pipeline(root, chain_id, spec.rpc_url, spec.ws_url, database_url, kafka_bootstrap, anvil)
