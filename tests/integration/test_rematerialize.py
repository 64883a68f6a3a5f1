"""Rematerialization on deploy and lineage, end to end on real services (the dispatcher with its
committer and rematerializer, workers running the real ``cryo_ingest`` and ``sql_transform``, the
Iceberg catalog in the session's Postgres, the warehouse on SeaweedFS S3 and in a directory).

Shown here: deploying a DAG of two derived jobs (``per_bucket`` reads ``blocks``, ``busiest``
reads ``per_bucket``) builds both and cuts them over in ONE pointer set; a deploy that changes
``per_bucket`` builds it and ``busiest`` again, and while ``busiest`` is held readers keep seeing
the previous versions of both (the new ``per_bucket`` version is ready, not current); a deploy
made before that finishes supersedes it (its versions are never current); a deploy whose SQL
fails changes nothing readers see and says why. Every version records the input versions its
run read, and lineage (API and CLI) walks them both ways.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
import pytest
import yaml

from dispatcher.cli import warehouse_of
from dispatcher.dag.loader import DagSource
from dispatcher.dag.spec import DagSpec
from dispatcher.dag.store import deploy
from dispatcher.datasets.store import DatasetStore
from dispatcher.protocol import OutputIn
from dispatcher.worker import OPERATORS, TaskContext
from operators.cryo_ingest.devhistory import History, build_history
from tests.integration.dispatcher_stack import DispatcherStack, running_dispatcher
from tests.integration.object_stores import TestStore
from tracekit.jsonrpc import RpcClient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PER_BUCKET = ("select block_number // {width} as bucket, count(*) as blocks, "
              "sum(n_transactions)::BIGINT as txs from blocks group by 1")
TOP = "top.busiest"  # a dataset id with a dot: its table is derived.top_busiest
BUSIEST = "select bucket, txs from per_bucket order by txs desc, bucket limit 1"


@pytest.fixture(scope="module")
async def history(on_demand_anvil: str) -> History:
    async with RpcClient(on_demand_anvil, timeout=60) as rpc:
        mined = await build_history(rpc, blocks=16, tx_per_block=3, seed=5)
        await rpc.call("anvil_mine", 2)
        return mined


@pytest.fixture(scope="module")
async def stack(pg_url: str, object_store: TestStore, on_demand_anvil: str,
                history: History) -> AsyncIterator[DispatcherStack]:
    warehouse = warehouse_of(object_store.url)
    async with running_dispatcher(pg_url, object_store, on_demand_anvil, warehouse=warehouse,
                                  s3=object_store.s3) as running:
        yield running


class Gate:
    """Holds ``sql_transform`` tasks of the named jobs until opened."""

    def __init__(self) -> None:
        self.held: set[str] = set()
        self.waiting: set[str] = set()
        self.opened = asyncio.Event()

    def operator(self) -> Any:
        real = OPERATORS["sql_transform"]

        async def held(ctx: TaskContext) -> Sequence[OutputIn]:
            if ctx.task.job in self.held:
                self.waiting.add(ctx.task.job)
                while not self.opened.is_set():
                    ctx.check()
                    await ctx.sleep(0.05)
            return await real(ctx)

        return held


def _spec(org: str, width: int, *, busiest: str = BUSIEST) -> tuple[DagSpec, DagSource]:
    data = {"dag": "analytics", "org": org, "jobs": [
        {"name": "busiest", "operator": "sql_transform", "activation": "reactive",
         "triggers": [{"manual": {}}], "inputs": ["per_bucket"],
         "outputs": [{"dataset": TOP, "write": {"mode": "replace"}}],
         "config": {"sql": busiest}},
        {"name": "per_bucket", "operator": "sql_transform", "activation": "reactive",
         "triggers": [{"manual": {}}], "inputs": ["blocks"],
         "outputs": [{"dataset": "per_bucket", "write": {"mode": "append", "unique_key": ["bucket"]}}],
         "config": {"sql": PER_BUCKET.format(width=width)}},
    ]}
    text = yaml.safe_dump(data, sort_keys=False)
    return DagSpec.model_validate(data), DagSource(text, "analytics.yaml")


async def _deploy(stack: DispatcherStack, width: int, **kw: str) -> Any:
    spec, source = _spec(stack.config.org_id, width, **kw)
    return await asyncio.to_thread(deploy, stack.pg_url, spec, source, "test")


async def _remat(stack: DispatcherStack, remat: Any) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(stack.pg_url) as conn:
        cur = await conn.execute("SELECT state, reason, built, runs, pointer_seq"
                                 " FROM state.rematerializations WHERE remat_id = %s", (remat,))
        row = await cur.fetchone()
    assert row is not None
    return dict(zip(("state", "reason", "built", "runs", "pointer_seq"), row, strict=True))


async def _wait_remat(stack: DispatcherStack, remat: Any,
                      states: Sequence[str] = ("done", "failed", "superseded"), timeout: float = 90.0
                      ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = await _remat(stack, remat)
        if found["state"] in states:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"rematerialization {remat} still {found} after {timeout}s")
        await asyncio.sleep(0.1)


async def _wait(condition: Any, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout}s")
        await asyncio.sleep(0.1)


def _rows(stack: DispatcherStack, dataset: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """What an Iceberg reader sees: the table's main, read by pyiceberg, once main has followed the
    current version (Postgres is the truth; the dispatcher moves main right after a cutover)."""
    from tests.integration.test_backfill_commit import _catalog

    store = DatasetStore(stack.pg_url, stack.config.org_id)
    namespace, _, name = store.table_names()[dataset].rpartition(".")
    snapshot = store.version(dataset)["snapshot_id"]
    deadline = time.monotonic() + timeout
    with _catalog(stack) as catalog:
        while (table := catalog.load_table((namespace, name))).current_snapshot().snapshot_id != snapshot:
            assert time.monotonic() < deadline, f"{dataset}: main did not follow snapshot {snapshot}"
            time.sleep(0.05)
        rows: list[dict[str, Any]] = table.scan().to_arrow().to_pylist()
    store.close()
    return sorted(rows, key=lambda r: r["bucket"])


async def test_deploys_rebuild_derived_datasets_and_cut_them_over_together(
        stack: DispatcherStack, history: History) -> None:
    gate = Gate()
    await stack.start_worker(slots=4, operators={"sql_transform": gate.operator()})
    org = stack.config.org_id
    store = DatasetStore(stack.pg_url, org)
    end = history.last_block
    run = await stack.submit(0, end, chunk_size=10)  # blocks v1, the derived jobs' input
    assert (await stack.wait_run(run))["state"] == "succeeded"
    assert (await stack.wait_commit(run))["state"] == "done"
    blocks = _node_blocks = await _blocks_of(stack)
    assert len(blocks) == end + 1

    # 1. the first deploy builds both derived jobs, upstream first, and cuts both over at once
    first = await _deploy(stack, width=10)
    assert first.rematerialize == ("per_bucket", "busiest")
    done = await _wait_remat(stack, first.rematerialization)
    assert done["state"] == "done", done
    pinned = store.pin()
    assert (pinned.pointers["per_bucket"], pinned.pointers[TOP]) == (1, 1)
    assert done["pointer_seq"] == pinned.seq
    assert set(store.history(limit=1)[0]["changed"]) == {"per_bucket", TOP}  # one pointer set
    expected = _buckets(_node_blocks, 10)
    assert [(r["bucket"], r["blocks"], r["txs"]) for r in _rows(stack, "per_bucket")] == expected
    top = max(expected, key=lambda b: (b[2], -b[0]))
    assert [(r["bucket"], r["txs"]) for r in _rows(stack, TOP)] == [(top[0], top[2])]

    assert store.table_names()[TOP] == f"{org}_derived.top_busiest"

    # each version records what it read: busiest v1 <- per_bucket v1 <- blocks v1
    assert store.version(TOP, 1)["inputs"] == {"per_bucket": 1}
    assert store.version("per_bucket", 1)["inputs"] == {"blocks": 1}
    assert store.version("per_bucket", 1)["producer"]["jobs"] == ["per_bucket"]

    # 2. a deploy changing per_bucket rebuilds it and busiest; while busiest is held, readers
    # keep the previous versions of both, the new per_bucket version waits (ready, not current)
    gate.held.add("busiest")
    second = await _deploy(stack, width=5)
    assert second.rematerialize == ("per_bucket", "busiest")

    async def per_bucket_built() -> bool:
        return "per_bucket" in (await _remat(stack, second.rematerialization))["built"]

    await _wait(per_bucket_built, "per_bucket v2 built")
    await _wait(lambda: _async(lambda: "busiest" in gate.waiting), "busiest held")
    assert store.version("per_bucket", 2)["state"] == "ready"
    assert (store.pin().pointers["per_bucket"], store.pin().pointers[TOP]) == (1, 1)
    assert [(r["bucket"], r["blocks"], r["txs"]) for r in _rows(stack, "per_bucket")] == expected

    gate.opened.set()
    done = await _wait_remat(stack, second.rematerialization)
    assert done["state"] == "done", done
    assert (store.pin().pointers["per_bucket"], store.pin().pointers[TOP]) == (2, 2)
    assert set(store.history(limit=1)[0]["changed"]) == {"per_bucket", TOP}
    assert _seen(stack) == _buckets(_node_blocks, 5)
    assert store.version(TOP, 2)["inputs"] == {"per_bucket": 2}

    # 3. a deploy superseded before it is built: none of its versions ever becomes current
    gate.opened.clear()
    gate.waiting.clear()
    third = await _deploy(stack, width=4)
    await _wait(lambda: _async(lambda: "busiest" in gate.waiting), "busiest of the third deploy held")
    fourth = await _deploy(stack, width=3)
    superseded = await _wait_remat(stack, third.rematerialization)
    assert superseded["state"] == "superseded" and "no longer active" in superseded["reason"], superseded
    gate.opened.set()
    assert (await _wait_remat(stack, fourth.rematerialization))["state"] == "done"
    third_versions = {d: v for d, v in superseded["built"].items()}
    assert third_versions == {"per_bucket": 3}
    history_rows = store.history(limit=50)
    assert all(row["pointers"].get("per_bucket") != 3 for row in history_rows)  # never current
    assert (store.pin().pointers["per_bucket"], store.pin().pointers[TOP]) == (4, 3)
    assert _seen(stack) == _buckets(_node_blocks, 3)

    # a manual run of the DAG reads the versions current when it starts (pinned by the dispatcher,
    # never by the caller); per_bucket appends with a unique key, so the same buckets again are
    # refused by the commit's check: nothing of the run becomes current
    before = store.pin()
    async with stack.api() as api:
        r = await api.post("/v1/dags/analytics/runs", json={"params": {"inputs": {"blocks": {"version": 1}}}})
        assert r.status_code == 422 and "params.inputs is set by the dispatcher" in r.text, r.text
        r = await api.post("/v1/dags/analytics/runs", json={"params": {}})
        assert r.status_code == 201, r.text
        manual = str(r.json()["run_id"])
    ran = await stack.wait_run(manual)
    assert ran["state"] == "succeeded", ran
    assert {d: pin["version"] for d, pin in ran["params"]["inputs"].items()} == {"blocks": 1, "per_bucket": 4}
    refused = await stack.wait_commit(manual)
    assert refused["state"] == "failed" and "per_bucket" in refused["last_error"], refused
    assert "unique" in refused["last_error"] or "duplicate" in refused["last_error"], refused
    assert store.pin().seq == before.seq

    # 4. SQL that fails: the rematerialization fails saying why, readers see what they saw
    bad = await _deploy(stack, width=3, busiest="select no_such_column from per_bucket")
    assert bad.rematerialize == ("busiest",)
    failed = await _wait_remat(stack, bad.rematerialization)
    assert failed["state"] == "failed" and "no_such_column" in failed["reason"], failed
    assert store.pin().seq == before.seq

    # lineage, through the API and the CLI: upstream to blocks, downstream from it
    async with stack.api() as api:
        r = await api.get(f"/v1/datasets/{TOP}/lineage", params={"depth": 5})
        assert r.status_code == 200, r.text
        tree = r.json()
        assert (tree["dataset_id"], tree["version"], tree["current"]) == (TOP, 3, True)
        (upstream,) = tree["inputs"]
        assert (upstream["dataset_id"], upstream["version"]) == ("per_bucket", 4)
        assert [(i["dataset_id"], i["version"]) for i in upstream["inputs"]] == [("blocks", 1)]
        assert upstream["producer"]["kind"] == "rematerialize" and upstream["producer"]["dag"] == "analytics"
        r = await api.get("/v1/datasets/blocks/lineage", params={"version": 1})
        assert {(c["dataset_id"], c["version"]) for c in r.json()["consumers"]} >= {
            ("per_bucket", v) for v in (1, 2, 3, 4)}
        assert (await api.get(f"/v1/datasets/{TOP}/lineage", params={"version": 99})).status_code == 404
        assert (await api.get("/v1/datasets/nope/lineage")).status_code == 404
        r = await api.get("/v1/datasets/per_bucket/versions/4")
        assert r.status_code == 200 and r.json()["inputs"] == {"blocks": 1}
    env = {**os.environ, "TRACE_DATABASE_URL": stack.pg_url}
    shown = subprocess.run([sys.executable, "-m", "tracecli", "datasets", "lineage", TOP, "--org", org,
                            "--json"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["inputs"][0]["version"] == 4
    shown = subprocess.run([sys.executable, "-m", "tracecli", "datasets", "show", "per_bucket", "--org",
                            org, "--version", "9"], env=env, capture_output=True, text=True, timeout=60,
                           check=False)
    assert shown.returncode != 0 and "per_bucket" in shown.stderr and "no version 9" in shown.stderr


def _seen(stack: DispatcherStack) -> list[tuple[int, int, int]]:
    return [(r["bucket"], r["blocks"], r["txs"]) for r in _rows(stack, "per_bucket")]


async def _async(check: Any) -> bool:
    return bool(check())


async def _blocks_of(stack: DispatcherStack) -> list[tuple[int, int]]:
    """(block_number, n_transactions) of the current blocks version, read by pyiceberg."""
    from tests.integration.test_backfill_commit import _read

    rows = _read(stack)["blocks"].select(["block_number", "n_transactions"]).to_pylist()
    return sorted((r["block_number"], r["n_transactions"]) for r in rows)


def _buckets(blocks: list[tuple[int, int]], width: int) -> list[tuple[int, int, int]]:
    out: dict[int, list[int]] = {}
    for number, txs in blocks:
        out.setdefault(number // width, []).append(txs)
    return [(bucket, len(txs), sum(txs)) for bucket, txs in sorted(out.items())]
