"""Finalization on the real stack: anvil -> follower -> sinks (hot tables) -> the dispatcher's
finalizer and a worker (`trace dispatcher run`, `trace worker run`, subprocesses) -> cold Iceberg
tables in a directory, with the catalog in Postgres.

While dev-chain traffic runs and reorgs are injected, the finalize DAG moves batches of 20 final
blocks from the hot tables into the cold ones. At every look, before, during and after, the cold
tables below the watermark (read by pyiceberg alone, at the snapshots of the current pointer set)
and the hot tables above it together equal the node's canonical chain: blocks (hash, parent),
transaction and log counts, transfers; hot rows are never pruned beyond what the current pointer
set's watermark minus the overlap allows, and are pruned down to it in the end.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest
from psycopg.types.json import Jsonb
from pyiceberg.catalog.sql import SqlCatalog

from devstack.process import free_port
from dispatcher.dag.errors import DatasetOwnedError
from dispatcher.dag.loader import load_builtin_dag, parse_dag
from dispatcher.dag.store import dataset_producers, deploy
from dispatcher.query.engine import Limits, QueryEngine
from operators.devchain.artifacts import token_artifact
from tests.integration.pipeline import Pipeline, make_pipeline, rpc
from tests.integration.test_transfer_sink import Harness
from tracekit.iceberg import catalog_uri, open_catalog

pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]

FINALITY = 16  # blocks: deeper than any injected reorg, and than the transfer sink's lag
BATCH = 20
OVERLAP = 10
NAMESPACE = "chain"  # the default org's chain datasets
TRANSFER_TOPIC0 = token_artifact().topic("Transfer(address,address,uint256)")
FINALIZED = ("blocks", "transactions", "logs", "transfers")

Blocks = dict[int, tuple[str, str]]
Counts = dict[int, int]
Transfers = dict[tuple[int, int], tuple[str, str, str, str, str, int]]


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


class Node:
    """The node's canonical chain, cached for final heights (they never change here)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.cache: dict[int, tuple[dict[str, Any], list[dict[str, Any]]]] = {}

    def block(self, n: int, final: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        if n in self.cache:
            return self.cache[n]
        for _ in range(20):  # anvil may answer null for a moment while it rewrites a reorged tail
            block = rpc(self.url, "eth_getBlockByNumber", hex(n), False)
            receipts = rpc(self.url, "eth_getBlockReceipts", hex(n))
            if block is not None and receipts is not None:
                break
            time.sleep(0.1)
        assert block is not None and receipts is not None, f"the node has no block {n}"
        if final:
            self.cache[n] = (block, receipts)
        return block, receipts

    def chain(self, upto: int, final: int) -> tuple[Blocks, Counts, Counts, Transfers]:
        blocks: Blocks = {}
        txs: Counts = {}
        logs: Counts = {}
        transfers: Transfers = {}
        for n in range(upto + 1):
            block, receipts = self.block(n, n <= final)
            blocks[n] = (block["hash"], block["parentHash"])
            txs[n] = len(block["transactions"])
            logs[n] = sum(len(r["logs"]) for r in receipts)
            for log in (lg for r in receipts for lg in r["logs"]):
                topics, data = log["topics"], log["data"]
                if len(topics) == 3 and topics[0] == TRANSFER_TOPIC0 and len(data) == 66:
                    transfers[(n, int(log["logIndex"], 16))] = (
                        log["blockHash"], log["transactionHash"], log["address"].lower(),
                        "0x" + topics[1][-40:], "0x" + topics[2][-40:], int(data, 16))
        return blocks, txs, logs, transfers


class Finalized:
    """The union the readers see: cold (pyiceberg, the current pointer set's snapshots) at and
    below the cold watermark, hot above it."""

    def __init__(self, p: Pipeline, warehouse: Path) -> None:
        self.p = p
        self.warehouse = warehouse
        self._catalog: SqlCatalog | None = None
        self.engine = QueryEngine(p.database_url, "default", p.chain_id,
                                  lambda: open_catalog(p.database_url, warehouse.as_uri()))

    @property
    def catalog(self) -> SqlCatalog:
        """pyiceberg's own catalog on the tables the dispatcher made (opened once there are some)."""
        if self._catalog is None:
            self._catalog = SqlCatalog("trace", uri=catalog_uri(self.p.database_url),
                                       warehouse=self.warehouse.as_uri())
        return self._catalog

    def close(self) -> None:
        self.engine.close()
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None

    def pointer_set(self) -> tuple[int, int | None, dict[str, int]]:
        """(seq, watermark of the finalized datasets, their snapshots) of the newest pointer set."""
        with self.p.db() as conn:
            row = conn.execute("SELECT seq, pointers, watermarks FROM state.dataset_pointer_sets"
                               " WHERE org_id = 'default' ORDER BY seq DESC LIMIT 1").fetchone()
            if row is None:
                return 0, None, {}
            seq, pointers, watermarks = row
            snapshots = dict(conn.execute(
                "SELECT dataset_id, snapshot_id FROM state.dataset_versions WHERE org_id = 'default'"
                " AND (dataset_id, version) IN (SELECT key, value::bigint FROM jsonb_each_text(%s::jsonb))",
                (Jsonb(pointers),)).fetchall())
        marks = [int(watermarks[d]) for d in FINALIZED if d in watermarks]
        return int(seq), (min(marks) if marks else None), snapshots

    def cold(self, dataset: str, snapshot: int, mark: int, columns: tuple[str, ...]) -> list[dict[str, Any]]:
        table = self.catalog.load_table((NAMESPACE, dataset))
        scan = table.scan(snapshot_id=snapshot, row_filter=f"block_number <= {mark}", selected_fields=columns)
        rows: pa.Table = scan.to_arrow()
        found: list[dict[str, Any]] = rows.to_pylist()
        return found

    def hot_min(self) -> int | None:
        with self.p.db() as conn:
            row = conn.execute("SELECT min(block_number) FROM hot.blocks WHERE chain_id = %s",
                               (self.p.chain_id,)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def read(self, upto: int) -> tuple[int | None, Blocks, Counts, Counts, Transfers, int | None]:
        """(watermark, blocks, tx counts, log counts, transfers, lowest hot block) of 0..upto, read
        consistently: again if a cutover happened meanwhile."""
        while True:
            hot_min = self.hot_min()
            seq, mark, snapshots = self.pointer_set()
            low = -1 if mark is None else mark
            blocks: Blocks = {}
            txs: Counts = {}
            logs: Counts = {}
            transfers: Transfers = {}
            if mark is not None:
                for r in self.cold("blocks", snapshots["blocks"], mark,
                                   ("block_number", "block_hash", "parent_hash")):
                    blocks[r["block_number"]] = (_hex(r["block_hash"]), _hex(r["parent_hash"]))
                for dataset, counts in (("transactions", txs), ("logs", logs)):
                    for r in self.cold(dataset, snapshots[dataset], mark, ("block_number",)):
                        counts[r["block_number"]] = counts.get(r["block_number"], 0) + 1
                for r in self.cold("transfers", snapshots["transfers"], mark,
                                   ("block_number", "log_index", "block_hash", "transaction_hash", "erc20",
                                    "from_address", "to_address", "value_string")):
                    transfers[(r["block_number"], r["log_index"])] = (
                        _hex(r["block_hash"]), _hex(r["transaction_hash"]), _hex(r["erc20"]),
                        _hex(r["from_address"]), _hex(r["to_address"]), int(r["value_string"]))
            span = (self.p.chain_id, low, upto)
            with self.p.db() as conn:
                for n, block_hash, parent in conn.execute(
                        "SELECT block_number, block_hash, parent_hash FROM hot.blocks WHERE chain_id = %s"
                        " AND block_number > %s AND block_number <= %s", span):
                    blocks[n] = (block_hash, parent)
                for table, counts in (("transactions", txs), ("logs", logs)):
                    counts.update(dict(conn.execute(
                        f"SELECT block_number, count(*) FROM hot.{table} WHERE chain_id = %s"
                        " AND block_number > %s AND block_number <= %s GROUP BY 1", span).fetchall()))
                for n, i, *rest, amount in conn.execute(
                        "SELECT block_number, log_index, block_hash, transaction_hash, token, from_address,"
                        " to_address, amount FROM hot.transfers WHERE chain_id = %s AND block_number > %s"
                        " AND block_number <= %s", span):
                    transfers[(n, i)] = (*rest, int(Decimal(amount)))
            if self.pointer_set()[0] == seq:
                return mark, blocks, txs, logs, transfers, hot_min


def _through_the_views(engine: QueryEngine, upto: int) -> tuple[Blocks, Counts, Counts, Transfers]:
    """What the query service's views (hot and cold as one table each) hold of 0..upto."""
    limits = Limits(rows=1_000_000, timeout_s=60)
    blocks = {r["block_number"]: (_hex(r["block_hash"]), _hex(r["parent_hash"])) for r in engine.run(
        f"select block_number, block_hash, parent_hash from blocks where block_number <= {upto}",
        limits=limits).table.to_pylist()}
    counts = []
    for view in ("transactions", "logs"):
        sql = f"select block_number, count(*) as n from {view} where block_number <= {upto} group by 1"
        rows = engine.run(sql, limits=limits).table.to_pylist()
        counts.append({r["block_number"]: r["n"] for r in rows})
    transfers = {(r["block_number"], r["log_index"]): (
        _hex(r["block_hash"]), _hex(r["transaction_hash"]), _hex(r["erc20"]), _hex(r["from_address"]),
        _hex(r["to_address"]), int(r["value_string"])) for r in engine.run(
        "select block_number, log_index, block_hash, transaction_hash, erc20, from_address, to_address,"
        f" value_string from transfers where block_number <= {upto}", limits=limits).table.to_pylist()}
    return blocks, counts[0], counts[1], transfers


def _problems(node: Node, union: Finalized, upto: int, final: int) -> tuple[int | None, list[str]]:
    """The watermark, and how the union of cold and hot differs from the node at 0..upto, read
    by hand (pyiceberg below the watermark, Postgres above) and through the query service's views."""
    mark, problems = _differences(node, union.read(upto), upto, final)
    seen = _through_the_views(union.engine, upto)
    _, through_views = _differences(node, (mark, *seen, None), upto, final)
    return mark, problems + [f"(views) {p}" for p in through_views]


Read = tuple[int | None, Blocks, Counts, Counts, Transfers, int | None]


def _differences(node: Node, read: Read, upto: int, final: int) -> tuple[int | None, list[str]]:
    mark, blocks, txs, logs, transfers, hot_min = read
    want_blocks, want_txs, want_logs, want_transfers = node.chain(upto, final)
    problems = [f"block {n}: {blocks.get(n)} != node {want_blocks[n]} (watermark {mark})"
                for n in range(upto + 1) if blocks.get(n) != want_blocks[n]]
    problems += [f"block {n}: {what} rows {got.get(n, 0)} != node {want[n]} (watermark {mark})"
                 for what, got, want in (("transaction", txs, want_txs), ("log", logs, want_logs))
                 for n in range(upto + 1) if got.get(n, 0) != want[n]]
    if transfers != want_transfers:
        missing = sorted(set(want_transfers) - set(transfers))[:5]
        extra = sorted(set(transfers) - set(want_transfers))[:5]
        differ = [k for k in sorted(set(transfers) & set(want_transfers))
                  if transfers[k] != want_transfers[k]]
        problems.append(f"transfers (watermark {mark}): missing {missing} extra {extra} differ {differ[:5]}")
    # pruning never runs ahead of the current pointer set: rows go only below watermark - overlap
    if hot_min is not None and hot_min > 0:
        assert mark is not None and hot_min <= mark - OVERLAP, (hot_min, mark)
    return mark, problems


def _start(p: Pipeline, name: str, env: dict[str, str], *args: str) -> None:
    with (p.root / f"{name}.0.log").open("wb") as log:
        p.procs[name] = subprocess.Popen([sys.executable, "-m", "tracecli", *args], env={**p.env(), **env},
                                         stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture
def harness(tmp_path: Path, pg_url: str, kafka_bootstrap: str) -> Iterator[Harness]:
    p = make_pipeline(tmp_path, pg_url, kafka_bootstrap, block_time=0.5)
    h = Harness(p)
    try:
        yield h
    finally:
        h.stop_traffic()
        p.stop_all()


def test_finalization_keeps_the_chain_equal_to_the_node_across_the_hot_cold_boundary(
        harness: Harness) -> None:
    h, p = harness, harness.p
    h.deploy()
    objects = p.root / "objects"
    objects.mkdir()
    port = free_port()
    env = {"TRACE_OBJECT_STORE": str(objects), "TRACE_API_PORT": str(port),
           "TRACE_DISPATCHER_URL": f"http://127.0.0.1:{port}",
           "TRACE_DISPATCHER_METRICS_PORT": str(free_port()),
           "TRACE_FINALITY_DEPTH": str(FINALITY), "TRACE_FINALIZE_BATCH_BLOCKS": str(BATCH),
           "TRACE_FINALIZE_OVERLAP_BLOCKS": str(OVERLAP), "TRACE_FINALIZE_EVERY_SECONDS": "0.5",
           "TRACE_LEASE_SECONDS": "10", "TRACE_WORKER_SLOTS": "2"}
    h.start_traffic()
    p.start_follower()
    p.start_sink()
    p.start_enrich()
    p.start_transfer_sink()
    node = Node(p.rpc_url)
    union = Finalized(p, objects / "warehouse")
    try:
        _finalize_through_reorgs(h, union, node, env, port)
    finally:
        union.close()


def _finalize_through_reorgs(h: Harness, union: Finalized, node: Node, env: dict[str, str],
                             port: int) -> None:
    """Before (hot alone), during (reorgs while batches go cold) and after (the chain stopped,
    finalization caught up and pruned): the union equals the node."""
    p = h.p
    accounts = h.deployment["accounts"]
    marks: list[int | None] = []

    def look(timeout: float = 30.0) -> None:
        """The union equals the node at every final height (those never change; the hot part may
        lag a moment behind the node: the sinks are streams)."""
        final = p.head() - FINALITY
        found: list[tuple[int | None, list[str]]] = []

        def equal() -> bool:
            found.append(_problems(node, union, final, final))
            return found[-1][1] == []

        try:
            p.wait_for(f"cold + hot to equal the node at 0..{final}", equal, timeout=timeout)
        finally:
            assert found and found[-1][1] == [], "\n".join(found[-1][1][:20])
        marks.append(found[-1][0])

    p.wait_for("final blocks in the hot tables", lambda: (p.sink_tip() or 0) >= FINALITY + 5, timeout=90)
    look(timeout=90)  # before: nothing is cold yet, the hot tables alone (the transfer sink starts slower)
    _start(p, "dispatcher", env, "dispatcher", "run")

    def api_up() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/openapi.json", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    p.wait_for("the dispatcher's API", api_up, timeout=60)
    _start(p, "worker", env, "worker", "run")
    for depth in (1, 3, 2, 4):  # during: reorgs while batches are finalized
        p.wait_for("more traffic to land", lambda: (p.cursor() or 0) >= p.head() - 1, timeout=60)
        h.reorg(depth, [[{"from": accounts[0], "to": accounts[3], "value": hex(depth)}, 0]])
        look()
    p.wait_for(f"{3 * BATCH} blocks to be cold", lambda: (union.pointer_set()[1] or -1) >= 3 * BATCH - 1,
               timeout=180)
    look()
    assert marks[0] is None and marks[-1] is not None and marks[-1] >= 3 * BATCH - 1, marks

    # after: the chain stops; finalization catches up to the last whole final batch, then prunes
    h.stop_traffic()
    head = h.settle()
    p.wait_for("the sink at the head", lambda: p.sink_tip() == head, timeout=60)
    expected = (head - FINALITY + 1) // BATCH * BATCH - 1
    p.wait_for(f"the cold watermark at {expected}", lambda: union.pointer_set()[1] == expected, timeout=180)
    p.wait_for("the hot tables pruned to the overlap", lambda: union.hot_min() == expected - OVERLAP,
               timeout=30)

    def equal_at_the_end() -> bool:  # the transfer sink may still be applying the last blocks
        return _problems(node, union, head, head - FINALITY)[1] == []

    try:
        p.wait_for("cold + hot to equal the node", equal_at_the_end, timeout=60)
    except AssertionError:
        print("\n".join(_problems(node, union, head, head - FINALITY)[1][:20]))
        raise
    with p.db() as conn:
        for table in ("blocks", "transactions", "logs", "transfers", "stake_changes"):
            below = conn.execute(f"SELECT count(*) FROM hot.{table} WHERE chain_id = %s"
                                 " AND block_number < %s", (p.chain_id, expected - OVERLAP)).fetchone()
            assert below == (0,), table
        runs = conn.execute("SELECT r.state, c.state, count(*) FROM state.runs r"
                            " LEFT JOIN state.run_commits c USING (run_id)"
                            " WHERE r.dag = 'finalize' GROUP BY 1, 2").fetchall()
    assert runs == [("succeeded", "done", (expected + 1) // BATCH)], runs  # one run per batch, in order
    transfers = union.read(head)[4]
    assert len(transfers) > 20, len(transfers)  # the comparison saw real transfers, cold and hot
    assert any(k[0] <= expected for k in transfers) and any(k[0] > expected for k in transfers)


RIVAL = """\
dag: rival
org: {org}
jobs:
  - name: copy
    operator: copier
    activation: reactive
    triggers: [{{manual: {{}}}}]
    outputs: [{{dataset: blocks, write: {{mode: append, unique_key: [block_number]}}}}]
"""


def test_backfill_and_finalize_share_the_chain_datasets_and_no_other_dag_takes_them(pg_url: str) -> None:
    org = f"f{uuid.uuid4().hex[:10]}"
    for name in ("finalize", "backfill", "finalize"):  # either first, redeploys unchanged
        loaded = load_builtin_dag(name, org)
        deploy(pg_url, loaded.spec, loaded.source, "trace")
    with psycopg.connect(pg_url) as conn:
        active: dict[str, int] = dict(conn.execute(
            "SELECT dag, version FROM state.dag_versions WHERE org_id = %s AND active", (org,)).fetchall())
    assert active == {"backfill": 1, "finalize": 1}
    producers = dataset_producers(pg_url, org)
    assert producers["blocks"] == "finalize" and producers["transfers"] == "finalize"  # the first keeps it
    rival = parse_dag(RIVAL.format(org=org), "rival.yaml")
    with pytest.raises(DatasetOwnedError, match="dataset 'blocks' is produced by dag 'finalize'"):
        deploy(pg_url, rival.spec, rival.source, "t")
