"""Datasets as Iceberg tables on real services: the session's Postgres holds the catalog (schema
``iceberg``), the files live on S3 (the session's SeaweedFS) or in a local directory; every test
runs on both. Versions are staged on branches and become current by moving main; pyiceberg's own
catalog API, with no Trace code, reads what Trace wrote."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog

from devstack.process import free_port
from tracekit.datasets import Column, DatasetContract, conform, contract
from tracekit.errors import (
    CatalogError,
    CatalogUnavailable,
    ObjectNotFound,
    RetryableError,
    SchemaChangeError,
)
from tracekit.iceberg import DatasetTable, ensure_table, open_catalog
from tracekit.objects import ObjectStore, S3Config
from tracekit.objects_open import open_object_store

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

BLOCKS = contract("blocks")


@dataclass(frozen=True)
class Place:
    """A catalog (its warehouse), a staging store and a fresh namespace of one test."""

    catalog: Catalog
    warehouse: str
    store: ObjectStore
    namespace: str
    s3: S3Config | None

    def url_key(self, url: str) -> str:
        """The staging store's key of a file URL it handed out."""
        return url.removeprefix(self.store.url("k")[:-1])


@pytest.fixture(params=["s3", "local"])
def place(request: pytest.FixtureRequest, pg_url: str, tmp_path: Path) -> Iterator[Place]:
    unique = uuid.uuid4().hex[:12]
    if request.param == "s3":
        s3: S3Config | None = request.getfixturevalue("s3_config")
        warehouse = "s3://datasets/warehouse"
        store = open_object_store(f"s3://datasets/staging/{unique}", s3)
    else:
        s3 = None
        warehouse = (tmp_path / "warehouse").as_uri()
        store = open_object_store((tmp_path / "objects").as_uri())
    catalog = open_catalog(pg_url, warehouse, s3)
    try:
        yield Place(catalog, warehouse, store, f"it_{unique}", s3)
    finally:
        catalog.close()  # type: ignore[attr-defined]


def blocks(first: int, last: int, tag: bytes = b"a") -> pa.Table:
    """Blocks ``first..last`` as cryo writes them (unsigned ints, large_binary), ``tag`` in the hash."""
    numbers = list(range(first, last + 1))
    n = len(numbers)
    return pa.table({
        "block_number": pa.array(numbers, pa.uint32()),
        "block_hash": pa.array([tag + i.to_bytes(8, "big") for i in numbers], pa.large_binary()),
        "parent_hash": pa.array([tag + (i - 1).to_bytes(8, "big", signed=True) for i in numbers],
                                pa.large_binary()),
        "author": pa.array([b"\x11" * 20] * n, pa.large_binary()),
        "gas_used": pa.array([21_000 * (i % 5) for i in numbers], pa.uint64()),
        "extra_data": pa.array([b""] * n, pa.large_binary()),
        "timestamp": pa.array([1_700_000_000 + i for i in numbers], pa.uint32()),
        "base_fee_per_gas": pa.array([None if i % 7 == 0 else 7 for i in numbers], pa.uint64()),
        "n_transactions": pa.array([i % 5 for i in numbers], pa.uint64()),
        "chain_id": pa.array([10143] * n, pa.uint64()),
    })


def write(place: Place, key: str, rows: pa.Table, table_contract: DatasetContract = BLOCKS) -> str:
    """Write ``rows``, conformed, as Parquet under the staging store; its URL."""
    path = place.store.pyarrow_path(key)
    pq.write_table(conform(rows, table_contract), path, filesystem=place.store.pyarrow_filesystem())
    return place.store.url(key)


def sorted_rows(table: pa.Table) -> list[dict[str, object]]:
    return sorted(table.to_pylist(), key=lambda row: (row["block_number"], str(row)))


def expected(*parts: pa.Table) -> list[dict[str, object]]:
    return sorted_rows(pa.concat_tables([conform(p, BLOCKS) for p in parts]))


def metadata_location(table: DatasetTable) -> str:
    return str(table.table().metadata_location)


# -- tables and versions ---------------------------------------------------------------------------


def test_ensure_table_is_idempotent(place: Place) -> None:
    table = ensure_table(place.catalog, place.namespace, BLOCKS)
    first = metadata_location(table)
    again = ensure_table(place.catalog, place.namespace, BLOCKS)
    assert metadata_location(again) == first  # nothing committed the second time
    loaded = table.table()
    assert loaded.format_version == 2
    schema = loaded.schema()
    assert [(f.name, str(f.transform)) for f in loaded.spec().fields] == [("block_number_trunc",
                                                                           "truncate[10000]")]
    assert schema.identifier_field_names() == {"block_number"}
    assert [schema.find_column_name(f.source_id) for f in loaded.sort_order().fields] == ["block_number"]
    main = table.main_snapshot()
    assert main is not None and table.files(main) == [] and table.read().num_rows == 0
    assert table.branches() == {}


def test_a_staged_version_is_invisible_until_main_moves_and_rollback_is_exact(place: Place) -> None:
    table = ensure_table(place.catalog, place.namespace, BLOCKS)
    empty = table.main_snapshot()
    assert empty is not None
    v1_rows = (blocks(0, 9_999), blocks(10_000, 12_345))
    v1_files = [write(place, "v1/0.parquet", v1_rows[0]), write(place, "v1/1.parquet", v1_rows[1])]

    v1 = table.stage(v1_files, branch="v1", replace_block_range=(0, 12_345),
                     properties={"trace.version": "1"})
    assert table.main_snapshot() == empty and table.read().num_rows == 0  # main unchanged
    assert table.branches() == {"v1": v1}
    assert sorted_rows(table.read(v1)) == expected(*v1_rows)
    assert table.table().snapshot_by_id(v1).summary["trace.version"] == "1"  # type: ignore[union-attr]

    table.set_main(v1)
    assert table.main_snapshot() == v1 and table.branches() == {}  # the branch is published
    assert sorted_rows(table.read()) == expected(*v1_rows)
    assert [(Path(f.url).name, f.record_count) for f in table.files(v1)] == [("0.parquet", 10_000),
                                                                             ("1.parquet", 2_346)]
    assert all(f.size > 0 for f in table.files(v1))

    v2_rows = blocks(10_000, 12_400, tag=b"b")
    v2 = table.stage([write(place, "v2/1.parquet", v2_rows)], branch="v2",
                     replace_block_range=(10_000, 12_400))
    assert table.main_snapshot() == v1 and sorted_rows(table.read()) == expected(*v1_rows)
    table.set_main(v2)
    assert sorted_rows(table.read()) == expected(v1_rows[0], v2_rows)

    table.set_main(v1)  # rollback
    assert table.main_snapshot() == v1 and sorted_rows(table.read()) == expected(*v1_rows)
    location = metadata_location(table)
    table.set_main(v1)  # again: nothing to do
    assert metadata_location(table) == location
    table.set_main(v2)  # and forward again
    assert sorted_rows(table.read()) == expected(v1_rows[0], v2_rows)


def test_staging_a_range_again_replaces_its_rows_without_duplicates(place: Place) -> None:
    table = ensure_table(place.catalog, place.namespace, BLOCKS)
    rows = (blocks(0, 9_999), blocks(10_000, 19_999))
    first = table.stage([write(place, "run1/0.parquet", rows[0]), write(place, "run1/1.parquet", rows[1])],
                        branch="run1", replace_block_range=(0, 19_999))
    table.set_main(first)
    # the same range, computed again, written under new keys (a retried backfill)
    again = table.stage([write(place, "run2/0.parquet", rows[0]), write(place, "run2/1.parquet", rows[1])],
                        branch="run2", replace_block_range=(0, 19_999))
    table.set_main(again)
    assert table.read().num_rows == 20_000
    assert sorted_rows(table.read()) == expected(*rows)
    assert {Path(f.url).parent.name for f in table.files(again)} == {"run2"}

    # a range inside one file: that file is rewritten without those rows, in the same snapshot
    patch = blocks(5_000, 5_009, tag=b"z")
    patched = table.stage([write(place, "patch/0.parquet", patch)], branch="patch",
                          replace_block_range=(5_000, 5_009))
    table.set_main(patched)
    got = sorted_rows(table.read())
    assert len(got) == 20_000
    want = [r for r in expected(*rows) if not 5_000 <= int(r["block_number"]) <= 5_009]  # type: ignore[call-overload]
    assert got == sorted(want + expected(patch), key=lambda row: (row["block_number"], str(row)))
    assert len(table.table().snapshot_by_id(patched).manifests(table.table().io)) > 0  # type: ignore[union-attr]


def test_pyiceberg_reads_a_trace_table_with_no_trace_code(place: Place, pg_url: str) -> None:
    table = ensure_table(place.catalog, place.namespace, BLOCKS)
    rows = (blocks(0, 9_999), blocks(10_000, 10_500))
    version = table.stage([write(place, "v/0.parquet", rows[0]), write(place, "v/1.parquet", rows[1])],
                          branch="v1", replace_block_range=(0, 10_500))
    table.set_main(version)

    # a reader of its own: the SQL catalog over the same Postgres schema, plain pyiceberg properties
    uri = pg_url.replace("postgresql://", "postgresql+psycopg://", 1) + "?options=-csearch_path%3Diceberg"
    properties = {"uri": uri, "warehouse": place.warehouse}
    if place.s3 is not None:
        assert place.s3.access_key_id is not None and place.s3.secret_access_key is not None
        properties |= {"s3.endpoint": str(place.s3.endpoint), "s3.region": place.s3.region,
                       "s3.access-key-id": place.s3.access_key_id.get_secret_value(),
                       "s3.secret-access-key": place.s3.secret_access_key.get_secret_value()}
    reader = SqlCatalog("trace", **properties)
    try:
        loaded = reader.load_table(f"{place.namespace}.blocks")
        assert loaded.current_snapshot().snapshot_id == version  # type: ignore[union-attr]
        assert sorted_rows(loaded.scan().to_arrow()) == expected(*rows)
        assert loaded.scan(row_filter="block_number >= 10000").to_arrow().num_rows == 501
    finally:
        reader.close()

    with psycopg.connect(pg_url) as conn:
        where = conn.execute("SELECT table_schema FROM information_schema.tables "
                             "WHERE table_name = 'iceberg_tables'").fetchall()
        assert where == [("iceberg",)]  # not public
        found = conn.execute("SELECT metadata_location FROM iceberg.iceberg_tables WHERE catalog_name = "
                             "'trace' AND table_namespace = %s AND table_name = 'blocks'",
                             (place.namespace,)).fetchall()
        assert found == [(metadata_location(table),)]


# -- schema changes --------------------------------------------------------------------------------


def test_an_incompatible_change_names_the_column_and_changes_nothing(place: Place) -> None:
    table = ensure_table(place.catalog, place.namespace, BLOCKS)
    before = metadata_location(table)
    schema_before = table.table().schema()
    dropped = replace(BLOCKS, columns=tuple(c for c in BLOCKS.columns if c.name != "extra_data"))
    narrowed = replace(BLOCKS, columns=tuple(replace(c, type="int") if c.name == "gas_used" else c
                                             for c in BLOCKS.columns))
    wider = replace(BLOCKS, partition_width=100_000)
    for bad, message in ((dropped, "column 'extra_data' is gone (dropped or renamed)"),
                         (narrowed, "column 'gas_used' changes type long -> int"),
                         (wider, "partitioned by truncate[10000](block_number), the contract by "
                                 "truncate[100000](block_number)")):
        with pytest.raises(SchemaChangeError) as caught:
            ensure_table(place.catalog, place.namespace, bad)
        assert str(caught.value).startswith(f"{place.namespace}.blocks: incompatible ")
        assert message in str(caught.value)
    assert metadata_location(table) == before
    assert table.table().schema() == schema_before


def test_a_compatible_change_evolves_the_table_and_old_files_stay_readable(place: Place) -> None:
    table = ensure_table(place.catalog, place.namespace, BLOCKS)
    old_rows = blocks(0, 99)
    table.set_main(table.stage([write(place, "old/0.parquet", old_rows)], branch="old",
                               replace_block_range=(0, 99)))
    widened = tuple(replace(c, type="long") if c.name == "n_transactions" else c for c in BLOCKS.columns)
    evolved = replace(BLOCKS, columns=(*widened, Column("size", "long", description="Block size")))
    ensure_table(place.catalog, place.namespace, evolved)
    schema = table.table().schema()
    assert schema.find_field("size").required is False
    assert str(schema.find_field("n_transactions").field_type) == "long"
    location = metadata_location(table)
    ensure_table(place.catalog, place.namespace, evolved)
    assert metadata_location(table) == location

    new_rows = blocks(100, 199).append_column("size", pa.array(range(100), pa.uint32()))
    table.set_main(table.stage([write(place, "new/1.parquet", new_rows, evolved)], branch="new",
                               replace_block_range=(100, 199)))
    read = table.read()
    sizes = dict(zip(read.column("block_number").to_pylist(), read.column("size").to_pylist(), strict=True))
    assert len(sizes) == 200 and sizes[5] is None and sizes[150] == 50
    assert read.column("n_transactions").type == pa.int64() and read.column("n_transactions")[3].as_py() == 3


# -- refusals --------------------------------------------------------------------------------------


def test_bad_stages_are_one_line_and_change_nothing(place: Place) -> None:
    table = ensure_table(place.catalog, place.namespace, BLOCKS)
    good = write(place, "good/0.parquet", blocks(0, 99))
    version = table.stage([good], branch="v1", replace_block_range=(0, 99))
    table.set_main(version)
    before = metadata_location(table)

    spanning = write(place, "bad/span.parquet", blocks(9_990, 10_010))
    raw = place.store.pyarrow_path("bad/raw.parquet")
    pq.write_table(blocks(200, 210), raw, filesystem=place.store.pyarrow_filesystem())  # not conformed
    cases: list[tuple[list[str], dict[str, object], type[Exception], str]] = [
        ([spanning], {}, CatalogError, "more than one partition value"),
        ([write(place, "bad/out.parquet", blocks(300, 310))], {"replace_block_range": (0, 99)}, CatalogError,
         "holds blocks 300..310, outside the replaced range 0..99"),
        ([good], {"replace_block_range": (0, 99)}, CatalogError, "is already part of the current version"),
        ([place.store.url("raw.parquet")], {}, ObjectNotFound, "no object"),
        ([place.store.url("bad/raw.parquet")], {}, CatalogError, "bad/raw.parquet"),
        ([], {}, CatalogError, "nothing to stage"),
    ]
    for files, options, error, message in cases:
        with pytest.raises(error) as caught:
            table.stage(files, branch="bad", **options)  # type: ignore[arg-type]
        assert message in str(caught.value) and "\n" not in str(caught.value), str(caught.value)
        assert str(caught.value).startswith(f"{place.namespace}.blocks: ")
    with pytest.raises(CatalogError, match="not on main"):
        table.stage([spanning], branch="main")
    with pytest.raises(CatalogError, match="no snapshot 12345"):
        table.set_main(12345)
    assert metadata_location(table) == before and table.branches() == {}


def test_open_catalog_without_postgres_is_one_retryable_line(tmp_path: Path) -> None:
    with pytest.raises(CatalogUnavailable) as caught:
        open_catalog(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", str(tmp_path / "wh"))
    assert isinstance(caught.value, RetryableError)
    assert str(caught.value).startswith("catalog: cannot reach the catalog's Postgres (")
    assert "\n" not in str(caught.value)


# -- concurrency and expiry ------------------------------------------------------------------------


def test_concurrent_stages_on_one_table_all_land(place: Place) -> None:
    ensure_table(place.catalog, place.namespace, BLOCKS)
    files = [write(place, f"c/{i}.parquet", blocks(i * 10_000, i * 10_000 + 9)) for i in range(4)]
    results: dict[int, int | BaseException] = {}

    def stage(i: int) -> None:
        table = DatasetTable(place.catalog, (place.namespace, "blocks"), attempts=10)
        try:
            results[i] = table.stage([files[i]], branch=f"c{i}")
        except BaseException as exc:  # reported by the assertion below
            results[i] = exc

    threads = [threading.Thread(target=stage, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(r, int) for r in results.values()), results
    table = DatasetTable(place.catalog, (place.namespace, "blocks"))
    assert table.branches() == {f"c{i}": results[i] for i in range(4)}
    for i in range(4):
        assert table.read(int(results[i])).num_rows == 10  # type: ignore[call-overload]


def test_expire_returns_only_files_no_kept_snapshot_uses(place: Place) -> None:
    table = ensure_table(place.catalog, place.namespace, BLOCKS)
    a = write(place, "a/0.parquet", blocks(0, 99))
    s1 = table.stage([a], branch="v1", replace_block_range=(0, 99))
    table.set_main(s1)
    b = write(place, "b/0.parquet", blocks(0, 99, tag=b"b"))
    keep_too = write(place, "b/1.parquet", blocks(10_000, 10_099))
    s2 = table.stage([b, keep_too], branch="v2", replace_block_range=(0, 10_099))
    table.set_main(s2)
    c = write(place, "c/0.parquet", blocks(0, 99, tag=b"c"))
    s3 = table.stage([c], branch="v3", replace_block_range=(0, 99))  # staged, not cut over
    unstaged = write(place, "d/0.parquet", blocks(0, 99, tag=b"d"))  # written, never staged

    expired = table.expire({s2})
    assert s1 in expired.snapshots and s2 not in expired.snapshots and s3 not in expired.snapshots
    assert expired.data_files == (a,)
    assert all(url not in expired.metadata_files for url in (b, c, unstaged))
    assert set(table.snapshot_ids()) == {s2, s3}
    place.store.delete(place.url_key(url) for url in expired.data_files)
    assert sorted_rows(table.read()) == expected(blocks(0, 99, tag=b"b"), blocks(10_000, 10_099))
    assert table.read(s3).num_rows == 200  # the staged version is intact
    assert table.expire({s2}).data_files == ()

    table.drop_branch("v3")  # abandon the staged version: now its own file goes
    assert table.expire({s2}).data_files == (c,)
    assert place.store.exists(place.url_key(unstaged)) and table.main_snapshot() == s2


def test_replacing_a_range_again_and_again_does_not_grow_main(place: Place) -> None:
    """Each replacement leaves main with the new file's manifest (and the one recording the
    deletion), not one more manifest per earlier version."""
    table = ensure_table(place.catalog, place.namespace, BLOCKS)
    for run in range(6):
        version = table.stage([write(place, f"r{run}/0.parquet", blocks(0, 99, tag=bytes([65 + run])))],
                              branch=f"r{run}", replace_block_range=(0, 99))
        table.set_main(version)
    loaded = table.table()
    assert len(loaded.current_snapshot().manifests(loaded.io)) <= 2  # type: ignore[union-attr]
    assert table.read().num_rows == 100 and len(table.files(version)) == 1
