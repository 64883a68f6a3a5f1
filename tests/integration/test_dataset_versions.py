"""Dataset versions and pointer sets on the real Postgres: atomic cutover of several datasets,
readers pinning one set, rollback of pointers and DAG versions (canceling the rolled-back
version's runs), and refusals that change nothing."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from dispatcher.catalog import JobPolicy, StaticJobCatalog
from dispatcher.dag.loader import parse_dag
from dispatcher.dag.store import active_spec, deploy
from dispatcher.datasets.pointers import CutoverRefused, RollbackRefused, VersionState
from dispatcher.datasets.store import DatasetNotFound, DatasetStore
from dispatcher.lease import Fence, RetryPolicy
from dispatcher.runs import NewTask
from dispatcher.store import TaskStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DAG = """\
dag: etl
org: {org}
jobs:
  - name: build
    operator: range_splitter
    activation: reactive
    triggers: [{{manual: {{}}}}]
    outputs: [{{dataset: {org}.daily, write: {{mode: replace}}}}]
    config: {{chunk_size: {chunk}}}
"""


@pytest.fixture
def org() -> str:
    return f"ds-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def datasets(pg_url: str, org: str) -> DatasetStore:
    store = DatasetStore(pg_url, org)
    for name in ("blocks", "logs"):
        store.ensure_dataset(name, table_name=f"chain.{name}", kind="chain")
    return store


def _ready(store: DatasetStore, dataset: str, *, watermark: int | None = None) -> int:
    version = store.begin_version(dataset, producer={"job": "test"})
    store.finish_version(dataset, version, state=VersionState.READY, cold_watermark=watermark, rows=10,
                         files=1, bytes_=100, block_range=(0, 9))
    return version


def _sets(pg_url: str, org: str) -> int:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT count(*) FROM state.dataset_pointer_sets WHERE org_id = %s",
                           (org,)).fetchone()
        return int(row[0]) if row else 0


def test_a_cutover_moves_several_pointers_in_one_set_and_a_retry_changes_nothing(
        datasets: DatasetStore) -> None:
    assert datasets.pin().seq == 0 and not datasets.pin().pointers
    b1, l1 = _ready(datasets, "blocks", watermark=9), _ready(datasets, "logs", watermark=9)
    applied = datasets.cutover({"blocks": b1, "logs": l1}, actor="t")
    assert applied.seq == 1 and applied.changed == ("blocks", "logs")
    pinned = datasets.pin()
    assert dict(pinned.pointers) == {"blocks": b1, "logs": l1}
    assert dict(pinned.watermarks) == {"blocks": 9, "logs": 9}
    assert datasets.cutover({"blocks": b1, "logs": l1}, actor="t").seq == 1  # already current
    assert datasets.pin().seq == 1


def test_a_reader_looping_during_cutovers_of_two_datasets_never_sees_a_mix(datasets: DatasetStore) -> None:
    """blocks and logs are cut over together, version n with version n: a reader pinning the
    pointer set over and over must see equal version numbers every time."""
    rounds = 30
    pairs = [(_ready(datasets, "blocks"), _ready(datasets, "logs")) for _ in range(rounds)]
    assert all(b == lg for b, lg in pairs)
    stop = threading.Event()
    seen: list[tuple[int | None, int | None]] = []

    def read() -> None:
        while not stop.is_set():
            pinned = datasets.pin()
            seen.append((pinned.pointers.get("blocks"), pinned.pointers.get("logs")))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for b, lg in pairs:
            datasets.cutover({"blocks": b, "logs": lg}, actor="t")
    finally:
        stop.set()
        reader.join()
    assert datasets.pin().pointers["blocks"] == rounds
    assert len({v for v in seen if v != (None, None)}) > 1, "the reader saw no cutover happen"
    assert [v for v in seen if v[0] != v[1]] == []


def test_refused_cutovers_and_rollbacks_change_nothing_and_say_why(
        datasets: DatasetStore, pg_url: str, org: str) -> None:
    good = _ready(datasets, "blocks")
    datasets.cutover({"blocks": good}, actor="t")
    building = datasets.begin_version("logs")
    failed = datasets.begin_version("blocks")
    datasets.finish_version("blocks", failed, state=VersionState.FAILED,
                            failure="gap: blocks 120..129 missing")
    before = (datasets.pin(), _sets(pg_url, org))
    with pytest.raises(CutoverRefused, match=f"blocks: version {failed} failed its checks "
                                             r"\(gap: blocks 120..129 missing\)"):
        datasets.cutover({"blocks": failed, "logs": building}, actor="t")
    with pytest.raises(CutoverRefused, match=f"logs: version {building} is building, not ready"):
        datasets.cutover({"logs": building}, actor="t")
    with pytest.raises(CutoverRefused, match="logs: no version 99"):
        datasets.cutover({"logs": 99}, actor="t")
    with pytest.raises(RollbackRefused, match="no pointer set 5 to roll back to"):
        datasets.rollback(to_seq=5, actor="t")
    with pytest.raises(DatasetNotFound, match="no dataset 'nope'"):
        datasets.begin_version("nope")
    assert (datasets.pin(), _sets(pg_url, org)) == before


async def test_rollback_restores_the_previous_set_and_dag_version_and_cancels_the_bad_versions_runs(
        datasets: DatasetStore, pg_url: str, org: str) -> None:
    v1 = deploy(pg_url, (d := parse_dag(DAG.format(org=org, chunk=10))).spec, d.source, "t")
    datasets.ensure_dataset("daily", table_name=f"{org}.daily")
    good = {"daily": _ready(datasets, "daily"), "blocks": _ready(datasets, "blocks")}
    first = datasets.cutover(good, actor="t")
    v2 = deploy(pg_url, (d := parse_dag(DAG.format(org=org, chunk=20))).spec, d.source, "t")
    assert (v1.version, v2.version) == (1, 2)

    job = JobPolicy("build", "range_splitter", writes=("daily",),
                    retry=RetryPolicy(max_attempts=3, initial=timedelta(seconds=1),
                                      maximum=timedelta(seconds=1)))
    async with AsyncConnectionPool(pg_url, min_size=1, max_size=4, open=False) as pool:
        tasks = TaskStore(pool, StaticJobCatalog({"build": job}), lease=timedelta(seconds=30))
        run = await tasks.submit_run(org_id=org, kind="rematerialize", dag="etl", dag_version=2, params={},
                                     submitted_by="t", tasks=[NewTask(job, f"e{i}", {}) for i in range(3)])
        leased = await tasks.claim("w1", limit=1, org_id=org)
        assert len(leased) == 1
        bad = datasets.cutover({"daily": _ready(datasets, "daily")}, actor="t", reason="v2 rematerialized")
        assert dict(datasets.pin().dag_versions)["etl"] == 2

        back = datasets.rollback(actor="alice", reason="v2 is wrong")
        assert back.restores == first.seq and back.seq == bad.seq + 1
        assert dict(datasets.pin().pointers) == good
        assert back.dags_restored == {"etl": 1} and back.canceled_runs == 1
        spec = active_spec(pg_url, org, "etl")
        assert spec is not None and spec.version == 1
        verdict, _ = await tasks.heartbeat(leased[0].task_id, leased[0].attempt)
        assert verdict is Fence.CANCELED  # the running task is told to stop
    with psycopg.connect(pg_url) as conn:
        states = sorted(r[0] for r in conn.execute(
            "SELECT state FROM state.tasks WHERE run_id = %s", (run.run_id,)).fetchall())
        run_state = conn.execute("SELECT state FROM state.runs WHERE run_id = %s", (run.run_id,)).fetchone()
    assert states == ["canceled", "canceled", "leased"]
    assert run_state is not None and run_state[0] == "canceling"


# -- the API and the CLI -----------------------------------------------------------------------------


async def test_api_lists_cuts_over_and_rolls_back_with_problems_for_bad_requests(
        datasets: DatasetStore, pg_url: str, org: str) -> None:
    import httpx

    from dispatcher.api.app import create_app
    from dispatcher.api.deps import ApiConfig

    b1, l1 = _ready(datasets, "blocks", watermark=9), _ready(datasets, "logs")
    app = create_app(ApiConfig(api_token="tok", worker_token="w", task_secret=b"s" * 32, database_url=pg_url,
                               org_id=org))
    auth = {"Authorization": "Bearer tok"}
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api", headers=auth) as http:
        assert (await http.get("/v1/datasets", headers={"Authorization": ""})).status_code == 401
        r = await http.post("/v1/datasets/cutover", json={"versions": {"blocks": b1, "logs": 42}})
        assert r.status_code == 404 and r.json()["error"] == "version_not_found"
        assert r.json()["detail"] == "cutover refused: logs: no version 42"
        r = await http.post("/v1/datasets/cutover", json={"versions": {"blocks": b1, "logs": l1},
                                                          "reason": "first"})
        assert r.status_code == 200, r.text
        assert r.json()["pointer_set"] == 1 and r.json()["changed"] == ["blocks", "logs"]
        listed = (await http.get("/v1/datasets")).json()
        assert listed["pointer_set"] == 1
        assert {d["dataset_id"]: (d["current_version"], d["cold_watermark"]) for d in listed["datasets"]} == {
            "blocks": (b1, 9), "logs": (l1, None)}
        b2 = _ready(datasets, "blocks", watermark=19)
        assert (await http.post("/v1/datasets/cutover", json={"versions": {"blocks": b2}})).status_code == 200
        versions = (await http.get("/v1/datasets/blocks/versions")).json()["versions"]
        assert [(v["version"], v["current"]) for v in versions] == [(b2, True), (b1, False)]
        r = await http.post("/v1/datasets/rollback", json={"to": 7})
        assert r.status_code == 404 and "no pointer set 7 to roll back to" in r.json()["detail"]
        r = await http.post("/v1/datasets/cutover", json={"versions": {"logs": 1}, "reason": "a\u0000b"})
        assert r.status_code == 422  # text Postgres cannot store: refused at the edge
        r = await http.post("/v1/datasets/cutover", json={"versions": {"logs": 2**63}})
        assert r.status_code == 422
        assert (await http.get("/v1/datasets/nothing/versions")).status_code == 404
        r = await http.post("/v1/datasets/rollback", json={"reason": "bad blocks"})
        assert r.status_code == 200 and r.json()["restores"] == 1
        assert r.json()["pointers"] == {"blocks": b1, "logs": l1}
        history = (await http.get("/v1/datasets/pointers")).json()
        assert [(h["seq"], h["action"], h["reason"]) for h in history] == [
            (3, "rollback", "bad blocks"), (2, "cutover", ""), (1, "cutover", "first")]
        assert (await http.post("/v1/datasets/cutover", json={"versions": {}})).status_code == 422
    with psycopg.connect(pg_url) as conn:
        audited = conn.execute("SELECT count(*) FROM state.audit_log WHERE org_id = %s"
                               " AND path LIKE '/v1/datasets%%'", (org,)).fetchone()
    assert audited is not None and audited[0] >= 8


def test_cli_cuts_over_and_rolls_back_and_refusals_are_one_line(
        datasets: DatasetStore, pg_url: str, org: str) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_")} | {"TRACE_DATABASE_URL": pg_url}

    def trace(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tracecli", "datasets", *args, "--org", org], env=env,
                              capture_output=True, text=True, timeout=60, check=False)

    version = _ready(datasets, "blocks")
    refused = trace("cutover", "blocks=9")
    assert refused.returncode == 1
    assert refused.stderr.strip() == "error: cutover refused: blocks: no version 9"
    bad = trace("cutover", "blocks")
    assert bad.returncode == 1
    assert bad.stderr.strip() == "error: 'blocks' is not DATASET=VERSION (e.g. blocks=3)"
    done = trace("cutover", f"blocks={version}", "--reason", "backfill 0..9")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"cut over: pointer set 1: blocks={version}"
    listed = trace("list")
    assert listed.returncode == 0 and "blocks" in listed.stdout and "chain.blocks" in listed.stdout
    back = trace("rollback")
    assert back.returncode == 0 and back.stdout.splitlines()[0] == "rolled back: pointer set 2: blocks=-"
    assert datasets.pin().pointers == {}
    nothing = trace("rollback", "--to", "5")
    assert nothing.returncode == 1 and nothing.stderr.startswith("error: no pointer set 5 to roll back to")
