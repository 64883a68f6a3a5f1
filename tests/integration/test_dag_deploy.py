"""Deploying DAG files to Postgres: versions, unchanged redeploys, dataset ownership, races, rollback."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from dispatcher.dag.errors import DagNotFound, DagVersionNotFound, DatasetOwnedError
from dispatcher.dag.loader import LoadedDag, load_builtin_dag, parse_dag
from dispatcher.dag.store import (
    DeployResult,
    active_job,
    active_job_async,
    active_spec,
    dataset_producers,
    deploy,
    list_versions,
    retire,
    rollback_to,
)

PIPELINE = """\
dag: {dag}
org: {org}
jobs:
  - name: split
    operator: range_splitter
    activation: reactive
    triggers: [{{manual: {{}}}}]
    outputs: [{{dataset: {org}.chunks, write: {{mode: append, unique_key: [start_block]}}}}]
    config: {{chunk_size: {chunk}}}
  - name: ingest
    operator: cryo_ingest
    activation: reactive
    triggers: [{{dataset: {org}.chunks}}]
    inputs: [{org}.chunks]
    outputs:
      - {{dataset: {org}.{output}, write: {{mode: append, unique_key: [block_number]}}}}
    scaling: {{max_concurrency: {concurrency}}}
    retry: {{max_attempts: 5, backoff: {{initial: 2s, max: 1m, multiplier: 3}}}}
"""


@pytest.fixture
def org() -> str:
    """Each test deploys into an org of its own (the session's database is shared)."""
    return "t" + uuid.uuid4().hex[:12]


Make = Callable[..., LoadedDag]


@pytest.fixture
def make(org: str) -> Make:
    def build(dag: str = "pipe", *, chunk: int = 1000, concurrency: int = 4, output: str = "blocks"
              ) -> LoadedDag:
        text = PIPELINE.format(dag=dag, org=org, chunk=chunk, concurrency=concurrency, output=output)
        return parse_dag(text, f"dags/{dag}.yaml")

    return build


def ship(pg_url: str, loaded: LoadedDag, *, dry: bool = False) -> DeployResult:
    return deploy(pg_url, loaded.spec, loaded.source, "tester", dry=dry)


def snapshot(pg_url: str, org: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(pg_url) as conn:
        return {
            table: conn.execute(f"SELECT * FROM state.{table} WHERE org_id = %s ORDER BY 1, 2, 3",
                                (org,)).fetchall()
            for table in ("dag_versions", "dag_jobs", "dataset_producers")
        }


def test_deploy_creates_version_1_and_the_same_file_again_changes_nothing(pg_url: str, org: str, make: Make
                                                                          ) -> None:
    first = ship(pg_url, make())
    assert (first.version, first.created, first.previous_version) == (1, True, None)
    assert first.diff.added == ("split", "ingest")
    assert first.claimed == (f"{org}.blocks", f"{org}.chunks")
    before = snapshot(pg_url, org)

    again = ship(pg_url, make())
    assert (again.version, again.created, again.digest) == (1, False, first.digest)
    assert again.diff.unchanged
    assert snapshot(pg_url, org) == before

    active = active_spec(pg_url, org, "pipe")
    assert active is not None and active.version == 1 and active.active
    assert active.spec == make().spec
    assert active.source_yaml == make().source.text and active.source_path == "dags/pipe.yaml"
    assert active.deployed_by == "tester"


def test_a_change_makes_version_2_with_its_diff(pg_url: str, org: str, make: Make) -> None:
    ship(pg_url, make())
    execution = ship(pg_url, make(concurrency=8))
    assert (execution.version, execution.created, execution.previous_version) == (2, True, 1)
    [job] = execution.diff.changed
    assert [(c.path, c.old, c.new, c.kind) for c in job.changes] == [
        ("scaling.max_concurrency", 4, 8, "execution")]
    assert execution.diff.rematerialize == ()

    material = ship(pg_url, make(concurrency=8, chunk=500))
    assert material.version == 3
    assert material.diff.kind == "materialization" and material.diff.rematerialize == ("split", "ingest")

    versions = list_versions(pg_url, org, "pipe")
    assert [(v.version, v.active) for v in versions] == [(1, False), (2, False), (3, True)]
    assert versions[0].spec.job("ingest").scaling.max_concurrency == 4

    with psycopg.connect(pg_url) as conn:
        record = active_job(conn, org, "pipe", "ingest")
        old = active_job(conn, org, "pipe", "ingest", version=1)
        assert active_job(conn, org, "pipe", "nope") is None
        rows = conn.execute("SELECT version, job, operator, activation, runtime, max_concurrency,"
                            " max_attempts, backoff_initial_ms, backoff_max_ms, backoff_multiplier, inputs,"
                            " outputs FROM state.dag_jobs WHERE org_id = %s AND version = 3 ORDER BY job",
                            (org,)).fetchall()
    assert record is not None and old is not None
    assert (record.version, record.max_concurrency, record.max_attempts) == (3, 8, 5)
    assert (record.backoff_initial_ms, record.backoff_max_ms, record.backoff_multiplier) == (
        2000, 60_000, 3.0)
    assert (record.inputs, record.outputs) == ((f"{org}.chunks",), (f"{org}.blocks",))
    assert record.spec == make(concurrency=8, chunk=500).spec.job("ingest")
    assert (old.version, old.max_concurrency) == (1, 4)
    assert rows == [
        (3, "ingest", "cryo_ingest", "reactive", "dispatcher", 8, 5, 2000, 60_000, 3.0, [f"{org}.chunks"],
         [f"{org}.blocks"]),
        (3, "split", "range_splitter", "reactive", "dispatcher", None, 3, 1000, 60_000, 2.0, [],
         [f"{org}.chunks"]),
    ]


async def test_the_dispatcher_reads_a_job_policy_on_its_async_connection(pg_url: str, org: str,
                                                                          make: Make) -> None:
    ship(pg_url, make())
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        record = await active_job_async(conn, org, "pipe", "ingest")
        missing = await active_job_async(conn, org, "other", "ingest")
    assert record is not None
    assert (record.operator, record.max_concurrency, record.version) == ("cryo_ingest", 4, 1)
    assert missing is None


def test_another_dag_producing_the_same_dataset_is_refused_and_nothing_changes(pg_url: str, org: str,
                                                                                make: Make) -> None:
    ship(pg_url, make("pipe"))
    before = snapshot(pg_url, org)
    with pytest.raises(DatasetOwnedError, match=rf"cannot deploy dag 'rival': datasets '{org}.blocks' \(dag "
                                                rf"'pipe'\), '{org}.chunks' \(dag 'pipe'\) are produced by "
                                                "other DAGs"):
        ship(pg_url, make("rival"))
    assert snapshot(pg_url, org) == before
    assert active_spec(pg_url, org, "rival") is None
    # the same dataset ids in another org are another org's datasets
    other = parse_dag(make("rival").source.text.replace(f"org: {org}", f"org: {org}x"), "rival.yaml")
    assert ship(pg_url, other).version == 1


def single(org: str, dag: str, dataset: str) -> LoadedDag:
    """A one-job DAG producing ``dataset``."""
    return parse_dag(f"dag: {dag}\norg: {org}\njobs: [{{name: a, operator: op, activation: reactive, "
                     f"triggers: [{{manual: {{}}}}], outputs: [{{dataset: {dataset}, "
                     "write: {mode: replace}}]}]", f"{dag}.yaml")


def test_datasets_follow_the_active_version(pg_url: str, org: str, make: Make) -> None:
    ship(pg_url, make())
    moved = ship(pg_url, make(output="traces"))
    assert (moved.claimed, moved.released) == ((f"{org}.traces",), (f"{org}.blocks",))
    assert dataset_producers(pg_url, org) == {f"{org}.chunks": "pipe", f"{org}.traces": "pipe"}
    # blocks is free now: another DAG may produce it
    assert ship(pg_url, single(org, "other", f"{org}.blocks")).created


def test_concurrent_deploys_never_share_a_version_number(pg_url: str, org: str, make: Make) -> None:
    files = [make(chunk=100 + n) for n in range(8)] + [make(chunk=100) for _ in range(4)]
    results: list[DeployResult] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(files))

    def run(loaded: LoadedDag) -> None:
        try:
            start.wait()
            results.append(ship(pg_url, loaded))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f,)) for f in files]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    created = sorted(r.version for r in results if r.created)
    versions = list_versions(pg_url, org, "pipe")
    assert created == [v.version for v in versions] == list(range(1, len(created) + 1))
    # every distinct file made a version; a copy only did when another file had been deployed in between
    assert len({v.digest for v in versions}) == 8 <= len(created) <= len(files)
    assert all(a.digest != b.digest for a, b in itertools.pairwise(versions))
    assert len(results) == len(files)
    assert sum(v.active for v in versions) == 1 and versions[-1].active


def test_rollback_flips_the_active_version_and_its_datasets(pg_url: str, org: str, make: Make) -> None:
    ship(pg_url, make())
    ship(pg_url, make(output="traces", concurrency=2))
    result = rollback_to(pg_url, org, "pipe", 1)
    assert (result.version, result.previous_version, result.changed) == (1, 2, True)
    assert (result.claimed, result.released) == ((f"{org}.blocks",), (f"{org}.traces",))
    assert [(v.version, v.active) for v in list_versions(pg_url, org, "pipe")] == [(1, True), (2, False)]
    with psycopg.connect(pg_url) as conn:
        record = active_job(conn, org, "pipe", "ingest")
    assert record is not None and (record.version, record.max_concurrency) == (1, 4)
    assert not rollback_to(pg_url, org, "pipe", 1).changed
    # deploying the rolled-back file again is unchanged; deploying version 2's file makes version 3
    assert not ship(pg_url, make()).created
    assert ship(pg_url, make(output="traces", concurrency=2)).version == 3

    with pytest.raises(DagVersionNotFound, match=r"dag 'pipe' has no version 9 \(versions 1-3\)"):
        rollback_to(pg_url, org, "pipe", 9)
    with pytest.raises(DagNotFound, match="never been deployed"):
        rollback_to(pg_url, org, "nothing", 1)


def test_rollback_is_refused_when_another_dag_took_a_dataset(pg_url: str, org: str, make: Make) -> None:
    ship(pg_url, make("pipe"))
    ship(pg_url, make("pipe", output="traces"))
    ship(pg_url, single(org, "rival", f"{org}.blocks"))  # free since version 2
    before = snapshot(pg_url, org)
    with pytest.raises(DatasetOwnedError, match=rf"cannot roll back to version 1 of dag 'pipe': dataset "
                                                rf"'{org}.blocks' is produced by dag 'rival'; a dataset "
                                                "has one producing DAG"):
        rollback_to(pg_url, org, "pipe", 1)
    assert snapshot(pg_url, org) == before


def test_retire_releases_the_datasets_and_keeps_the_versions(pg_url: str, org: str, make: Make) -> None:
    ship(pg_url, make())
    assert retire(pg_url, org, "pipe") == (1, (f"{org}.blocks", f"{org}.chunks"))
    assert active_spec(pg_url, org, "pipe") is None
    assert dataset_producers(pg_url, org) == {}
    assert retire(pg_url, org, "pipe") == (None, ())
    assert ship(pg_url, make("rival")).created  # the datasets are free
    with pytest.raises(DatasetOwnedError):
        rollback_to(pg_url, org, "pipe", 1)
    assert [v.version for v in list_versions(pg_url, org, "pipe")] == [1]


def test_a_dry_deploy_computes_everything_and_writes_nothing(pg_url: str, org: str, make: Make) -> None:
    ship(pg_url, make())
    before = snapshot(pg_url, org)
    dry = ship(pg_url, make(chunk=5), dry=True)
    assert (dry.version, dry.created, dry.dry) == (2, True, True)
    assert [c.path for c in dry.diff.changed[0].changes] == ["config.chunk_size"]
    assert snapshot(pg_url, org) == before
    with pytest.raises(DatasetOwnedError):
        ship(pg_url, make("rival"), dry=True)


def test_the_builtin_backfill_dag_deploys(pg_url: str) -> None:
    loaded = load_builtin_dag("backfill")
    result = deploy(pg_url, loaded.spec, loaded.source, "trace")
    assert result.created or result.diff.unchanged
    with psycopg.connect(pg_url) as conn:
        ingest = active_job(conn, "default", "backfill", "ingest")
    assert ingest is not None
    assert (ingest.operator, ingest.max_concurrency, ingest.max_attempts) == ("cryo_ingest", 4, 5)
    assert (ingest.backoff_initial_ms, ingest.backoff_max_ms, ingest.backoff_multiplier) == (
        1000, 60_000, 2.0)
    assert ingest.outputs == ("blocks", "transactions", "logs", "traces")
