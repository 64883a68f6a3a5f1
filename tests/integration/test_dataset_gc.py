"""Retention and gc end to end on Postgres and Iceberg, on SeaweedFS S3 and on a directory: after
several committed runs of one range, gc keeps the versions of the newest pointer sets readable and
a rollback to them works, deletes the files only expired versions used, never a file a kept
version uses (however old), deletes orphaned staging files older than the retention and keeps the
younger ones; ``--dry`` says the same and changes nothing."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import psycopg
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from dispatcher.datasets.cli import app as datasets_app
from dispatcher.datasets.commit import follow_pointers
from dispatcher.datasets.committer import Committer
from dispatcher.datasets.gc import GcConfig, GcReport, collect_garbage
from dispatcher.datasets.pointers import CutoverRefused, RollbackRefused
from dispatcher.datasets.retention import Kept
from dispatcher.datasets.store import DatasetStore
from tests.integration.test_dataset_commit import _external_read, _run
from tests.integration.test_iceberg import Place, blocks, expected, sorted_rows
from tests.integration.test_iceberg import place as place
from tracekit.iceberg import DatasetTable

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DAY = timedelta(hours=24)


def _tagged(first: int, last: int, tag: bytes) -> pa.Table:
    """Blocks ``first..last`` (hashes linked as one chain in every version) whose ``extra_data``
    says which run wrote them."""
    rows = blocks(first, last)
    column = rows.schema.get_field_index("extra_data")
    return rows.set_column(column, "extra_data", pa.array([tag] * rows.num_rows, pa.large_binary()))


async def _commit(pg_url: str, org: str, place: Place, parts: dict[tuple[int, int], pa.Table], *,
                  stale: pa.Table | None = None) -> uuid.UUID:
    """A run of ``parts`` committed by the committer (its commit marked done)."""
    run_id = await _run(pg_url, org, place, parts, stale=stale)
    committer = Committer(pg_url, org, lambda: place.catalog, namespace=place.namespace)
    assert committer.commit_one() == run_id
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT state, last_error FROM state.run_commits WHERE run_id = %s",
                           (run_id,)).fetchone()
    assert row == ("done", None)
    return run_id


def _ended(pg_url: str, run_id: uuid.UUID) -> datetime:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT finished_at FROM state.runs WHERE run_id = %s", (run_id,)).fetchone()
    assert row is not None and isinstance(row[0], datetime)
    return row[0]


def _stale_key(place: Place, run_id: uuid.UUID) -> str:
    (key,) = [k for k, _ in place.store.list(f"_staging/{run_id}/") if "-stale/" in k]
    return key


def _version_files(store: DatasetStore, version: int) -> list[str]:
    """The files version ``version``'s manifest lists, in block order."""
    with psycopg.connect(store.url) as conn:
        row = conn.execute("SELECT manifest FROM state.dataset_versions WHERE org_id = %s AND dataset_id = "
                           "'blocks' AND version = %s", (store.org, version)).fetchone()
    assert row is not None
    return [f["uri"] for f in row[0]["files"]]


def _state(store: DatasetStore) -> dict[int, tuple[str, int | None]]:
    return {int(r["version"]): (r["state"], r["snapshot_id"]) for r in store.versions("blocks")}


def _read_at(place: Place, snapshot_id: int) -> list[dict[str, object]]:
    return sorted_rows(DatasetTable(place.catalog, (place.namespace, "blocks")).read(snapshot_id))


async def test_gc_keeps_the_newest_versions_readable_and_deletes_only_what_no_kept_version_uses(
        place: Place, pg_url: str) -> None:
    org = f"g-{uuid.uuid4().hex[:8]}"
    store = DatasetStore(pg_url, org)
    # v1 covers blocks 0..19; v2..v4 replace only 0..9, so v1's file of 10..19 stays in every version
    tags = {1: b"one", 2: b"two", 3: b"three", 4: b"four"}
    first = {(0, 9): _tagged(0, 9, tags[1]), (10, 19): _tagged(10, 19, tags[1])}
    runs = {1: await _commit(pg_url, org, place, first, stale=blocks(0, 9, b"S"))}
    for n in (2, 3):
        runs[n] = await _commit(pg_url, org, place, {(0, 9): _tagged(0, 9, tags[n])})
    runs[4] = await _commit(pg_url, org, place, {(0, 9): _tagged(0, 9, tags[4])}, stale=blocks(0, 9, b"S"))
    contents = {n: expected(_tagged(0, 9, tags[n]), _tagged(10, 19, tags[1])) for n in tags}
    assert dict(store.pin().pointers) == {"blocks": 4}
    files = {n: _version_files(store, n) for n in tags}
    shared = files[1][1]  # blocks 10..19, written by run 1, used by every version
    assert "00000010_to_00000019" in shared
    before = _state(store)
    unknown = f"_staging/{uuid.uuid4()}/t.1/x.parquet"  # a run this database does not know
    place.store.put(unknown, b"x")
    old_orphan, young_orphan = _stale_key(place, runs[1]), _stale_key(place, runs[4])

    # run 4 ended just under a day before "now", run 1 earlier: its orphan is older than a day
    now = _ended(pg_url, runs[4]) + DAY - timedelta(milliseconds=1)
    report = collect_garbage(GcConfig(pg_url, org, versions_kept=2, staging_retention=DAY), place.catalog,
                             place.store, now=now)

    assert report.expired == [("blocks", 1), ("blocks", 2)]
    (plan,) = report.retention
    assert dict(plan.kept) == {4: Kept.CURRENT, 3: Kept.ROLLBACK}
    after = _state(store)
    assert {n: s for n, (s, _) in after.items()} == {1: "expired", 2: "expired", 3: "ready", 4: "ready"}
    table = DatasetTable(place.catalog, (place.namespace, "blocks"))
    remaining = set(table.snapshot_ids())
    assert before[1][1] not in remaining and before[2][1] not in remaining
    for n in (3, 4):  # the kept versions read exactly as committed
        snapshot = before[n][1]
        assert snapshot is not None and snapshot in remaining
        assert _read_at(place, snapshot) == contents[n]
    assert sorted_rows(_external_read(place, pg_url, place.namespace)) == contents[4]

    def exists(url: str) -> bool:
        return place.store.exists(place.url_key(url))

    assert not exists(files[1][0]) and not exists(files[2][0])  # only expired versions used them
    assert exists(shared)  # old, listed only by an expired version's manifest, but kept versions use it
    assert all(exists(f.url) for f in table.files(before[4][1] or 0))  # the current version's files
    assert all(exists(url) for url in files[3] + files[4])
    deleted = {(d.kind, d.key) for d in report.deleted}
    assert ("staging", old_orphan) in deleted and not place.store.exists(old_orphan)
    assert place.store.exists(young_orphan) and place.store.exists(unknown)
    assert {key for kind, key in deleted if kind == "data"} == {place.url_key(files[n][0]) for n in (1, 2)}

    # a rollback to a kept pointer set works and reads back; one naming an expired version is refused
    store.rollback(actor="t")
    follow_pointers(store, place.catalog, namespace=place.namespace)
    assert dict(store.pin().pointers) == {"blocks": 3}
    assert sorted_rows(_external_read(place, pg_url, place.namespace)) == contents[3]
    with pytest.raises(RollbackRefused, match="blocks version 2 expired"):
        store.rollback(to_seq=2, actor="t")
    with pytest.raises(CutoverRefused, match="blocks: version 1 is expired, not ready"):
        store.cutover({"blocks": 1}, actor="t")

    # a second pass finds nothing more (the sets kept name versions 4 and 3)
    again = collect_garbage(GcConfig(pg_url, org, versions_kept=2, staging_retention=DAY), place.catalog,
                            place.store, now=now)
    assert again.expired == [] and again.deleted == ()
    # a day later, run 4's orphan is old too; the files versions 3 and 4 use still are not
    later = collect_garbage(GcConfig(pg_url, org, versions_kept=2, staging_retention=DAY), place.catalog,
                            place.store, now=now + timedelta(hours=1))
    assert [(d.kind, d.key) for d in later.deleted] == [("staging", young_orphan)]
    assert all(exists(url) for url in [shared, *files[3], *files[4]])


def _everything(place: Place, store: DatasetStore) -> tuple[object, ...]:
    table = DatasetTable(place.catalog, (place.namespace, "blocks"))
    return (_state(store), sorted(table.snapshot_ids()), table.branches(), list(place.store.list("")))


def _fates(report: GcReport) -> tuple[object, ...]:
    return (report.expired, sorted((d.kind, d.key) for d in report.deleted), sorted(report.outside),
            dict(report.staging.left))


async def test_dry_gc_changes_nothing_and_says_what_gc_then_does(
        place: Place, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    org = f"d-{uuid.uuid4().hex[:8]}"
    store = DatasetStore(pg_url, org)
    last = uuid.uuid4()
    for tag in (b"one", b"two", b"three"):
        last = await _commit(pg_url, org, place, {(0, 9): _tagged(0, 9, tag)}, stale=blocks(0, 9, b"S"))
    untouched = _everything(place, store)

    # the command, as a user runs it (staging files are all younger than the default day)
    store_url = place.store.url("k")[:-2]
    monkeypatch.setenv("TRACE_DATABASE_URL", pg_url)
    monkeypatch.setenv("TRACE_OBJECT_STORE", store_url)
    monkeypatch.setenv("TRACE_DATASET_VERSIONS_KEPT", "1")
    if place.s3 is not None:
        assert place.s3.access_key_id is not None and place.s3.secret_access_key is not None
        monkeypatch.setenv("TRACE_S3_ENDPOINT", str(place.s3.endpoint))
        monkeypatch.setenv("TRACE_S3_ACCESS_KEY_ID", place.s3.access_key_id.get_secret_value())
        monkeypatch.setenv("TRACE_S3_SECRET_ACCESS_KEY", place.s3.secret_access_key.get_secret_value())
    result = CliRunner().invoke(datasets_app, ["gc", "--dry", "--org", org], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "would expire 2 version(s); would delete 2 file(s)" in result.output
    assert "3 younger than the retention" in result.output  # the stale attempts' files
    assert _everything(place, store) == untouched

    config = GcConfig(pg_url, org, versions_kept=1, staging_retention=DAY)
    now = _ended(pg_url, last) + 2 * DAY
    dry = collect_garbage(config, place.catalog, place.store, now=now, dry=True)
    assert _everything(place, store) == untouched
    assert dry.expired == [("blocks", 1), ("blocks", 2)] and len(dry.deleted) == 2 + 3  # 2 data, 3 orphans
    real = collect_garbage(config, place.catalog, place.store, now=now)
    assert _fates(real) == _fates(dry)
    assert not any(place.store.exists(d.key) for d in dry.deleted)
