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
