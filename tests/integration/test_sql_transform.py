"""sql_transform on real services (Postgres catalog; SeaweedFS and a directory): the worker's
operator reads an Iceberg ``blocks`` table at the snapshot the payload pins (an older one while a
newer one is main), runs the job's SQL, stages the result's Parquet files, and those files become a
derived dataset's table through ``ensure_table(derived_contract(...))`` + ``stage``: a result
partitioned by block range and an unpartitioned aggregate. Also: derived tables' schema changes and
partitioning are checked as for chain datasets."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog import Catalog

from dispatcher.protocol import LeasedTask, OutputIn
from dispatcher.worker import OPERATORS, DispatcherClient, TaskContext, WorkerEnv
from tracekit.datasets import conform, contract, derived_contract
from tracekit.errors import CatalogError, ConfigError, SchemaChangeError
from tracekit.iceberg import DatasetTable, ensure_table, open_catalog
from tracekit.objects import ObjectStore, S3Config
from tracekit.objects_open import open_object_store

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

BLOCKS = contract("blocks")
OUTPUT = "derived.block_gas"


@dataclass(frozen=True)
class Place:
    catalog: Catalog
    pg_url: str
    warehouse: str
    s3: S3Config | None
    store: ObjectStore
    store_url: str
    namespace: str


@pytest.fixture(params=["s3", "local"])
def place(request: pytest.FixtureRequest, pg_url: str, tmp_path: Path) -> Iterator[Place]:
    unique = uuid.uuid4().hex[:12]
    if request.param == "s3":
        s3: S3Config | None = request.getfixturevalue("s3_config")
        warehouse = "s3://datasets/warehouse"
        store_url = f"s3://datasets/staging/{unique}"
    else:
        s3 = None
        warehouse = (tmp_path / "warehouse").as_uri()
        store_url = (tmp_path / "objects").as_uri()
    catalog = open_catalog(pg_url, warehouse, s3)
    try:
        store = open_object_store(store_url, s3)
        yield Place(catalog, pg_url, warehouse, s3, store, store_url, f"it_{unique}")
    finally:
        catalog.close()


def blocks(first: int, last: int, gas: int) -> pa.Table:
    """Blocks ``first..last`` in the blocks contract, ``gas_used`` = number * ``gas``."""
    numbers = list(range(first, last + 1))
    n = len(numbers)
    return conform(pa.table({
        "block_number": pa.array(numbers, pa.int64()),
        "block_hash": pa.array([gas.to_bytes(2, "big") + i.to_bytes(8, "big") for i in numbers]),
        "parent_hash": pa.array([(i - 1).to_bytes(8, "big", signed=True) for i in numbers]),
        "author": pa.array([b"\x11" * 20] * n),
        "gas_used": pa.array([i * gas for i in numbers], pa.int64()),
        "extra_data": pa.array([b""] * n),
        "timestamp": pa.array([1_700_000_000 + i for i in numbers], pa.int64()),
        "base_fee_per_gas": pa.array([7] * n, pa.int64()),
        "n_transactions": pa.array([i % 3 for i in numbers], pa.int32()),
        "chain_id": pa.array([10143] * n, pa.int64()),
    }), BLOCKS)


@dataclass(frozen=True)
class Versions:
    table: DatasetTable
    old: int  # blocks 9_990..10_009, gas_used = 1 x number
    new: int  # blocks 9_990..10_019, gas_used = 2 x number (main)


def put(place: Place, name: str, rows: pa.Table) -> str:
    """``rows`` as Parquet under ``in/`` in the store; its URL."""
    pq.write_table(rows, place.store.pyarrow_path(f"in/{name}"), filesystem=place.store.pyarrow_filesystem())
    return place.store.url(f"in/{name}")


def two_versions(place: Place) -> Versions:
    table = ensure_table(place.catalog, place.namespace, BLOCKS)
    urls = [put(place, "v1.parquet", blocks(9_990, 9_999, 1)),
            put(place, "v1b.parquet", blocks(10_000, 10_009, 1))]
    old = table.stage(urls, branch="v1", replace_block_range=(9_990, 10_009))
    table.set_main(old)
    urls = [put(place, "v2.parquet", blocks(9_990, 9_999, 2)),
            put(place, "v2b.parquet", blocks(10_000, 10_019, 2))]
    new = table.stage(urls, branch="v2", replace_block_range=(9_990, 10_019))
    table.set_main(new)
    assert table.read().num_rows == 30 and table.read(old).num_rows == 20
    return Versions(table, old, new)


def payload(place: Place, sql: str, snapshot_id: int, version: int, **config: Any) -> dict[str, Any]:
    pin = {"version": version, "table": f"{place.namespace}.blocks", "snapshot_id": snapshot_id}
    return {"config": {"sql": sql, **config}, "params": {"inputs": {"chain.blocks": pin}}}


async def run_operator(place: Place, task_payload: dict[str, Any], writes: list[str] | None = None
                       ) -> list[OutputIn]:
    task = LeasedTask.model_validate({
        "task_id": str(uuid.uuid4()), "run_id": str(uuid.uuid4()), "org_id": "default", "dag": "d",
        "job": "derive", "operator": "sql_transform", "attempt": 1, "payload": task_payload,
        "reads": ["chain.blocks"], "writes": [OUTPUT] if writes is None else writes,
        "lease_expires_at": (datetime.now(UTC) + timedelta(seconds=60)).isoformat(), "token": "t"})
    env = WorkerEnv(store=place.store, store_url=place.store_url,
                    open_catalog=functools.partial(open_catalog, place.pg_url, place.warehouse, place.s3))
    client = DispatcherClient("http://dispatcher", "w",
                              transport=httpx.MockTransport(lambda _: httpx.Response(500)))
    try:
        ctx = TaskContext(task=task, env=env, client=client)
        outputs = list(await OPERATORS["sql_transform"](ctx))
        assert all(key.startswith(ctx.staging_prefix) for key, _ in place.store.list(ctx.staging_prefix))
        return outputs
    finally:
        await client.aclose()


def read_output(place: Place, output: OutputIn) -> pa.Table:
    key = "_staging/" + output.uri.split("/_staging/", 1)[1]
    return pq.read_table(place.store.pyarrow_path(key), filesystem=place.store.pyarrow_filesystem())


async def test_a_pinned_older_snapshot_gives_its_rows_as_block_partitioned_files(place: Place) -> None:
    versions = two_versions(place)
    sql = ('SELECT block_number, gas_used AS gas, n_transactions FROM "chain.blocks" '
           "WHERE block_number % 2 = 0")
    outputs = await run_operator(place, payload(place, sql, versions.old, 1))

    # the older version's rows only: blocks up to 10_008, gas 1 x number (main has 2 x, up to 10_018)
    assert [(o.dataset_id, o.block_start, o.block_end, o.rows) for o in outputs] == [
        (OUTPUT, 9_990, 9_998, 5), (OUTPUT, 10_000, 10_008, 5)]
    assert [Path(o.uri).name for o in outputs] == ["derived.block_gas__00000000_to_00009999.parquet",
                                                   "derived.block_gas__00010000_to_00019999.parquet"]
    rows = pa.concat_tables([read_output(place, o) for o in outputs])
    assert rows.column("block_number").to_pylist() == list(range(9_990, 10_009, 2))
    assert rows.column("gas").to_pylist() == list(range(9_990, 10_009, 2))
    assert all(o.sha256 is not None and o.bytes > 0 for o in outputs)

    # the files become a derived dataset's table, partitioned by block range
    schema = read_output(place, outputs[0]).schema
    derived = derived_contract("block_gas", schema, unique_key=["block_number"])
    assert derived.partitioned and [c.type for c in derived.columns] == ["long", "long", "int"]
    table = ensure_table(place.catalog, place.namespace, derived)
    assert [str(f.transform) for f in table.table().spec().fields] == ["truncate[10000]"]
    staged = table.stage([o.uri for o in outputs], branch="v1", replace_block_range=(9_990, 10_008))
    table.set_main(staged)
    assert table.read().sort_by("block_number").to_pylist() == rows.to_pylist()

    # pinning the newer snapshot reads the newer rows
    newer = await run_operator(place, payload(place, sql, versions.new, 2))
    assert [(o.block_start, o.block_end, o.rows) for o in newer] == [(9_990, 9_998, 5), (10_000, 10_018, 10)]


async def test_an_unpartitioned_aggregate_of_the_pinned_snapshot(place: Place) -> None:
    versions = two_versions(place)
    sql = ('SELECT n_transactions AS kind, count(*) AS blocks, sum(gas_used) AS gas, '
           'max(block_number)::BIGINT AS last_block FROM "chain.blocks" GROUP BY ALL')
    (output,) = await run_operator(place, payload(place, sql, versions.old, 1, sort=["kind"]))
    assert (output.block_start, output.block_end, output.rows) == (None, None, 3)
    rows = read_output(place, output)
    old = list(range(9_990, 10_010))
    of_kind = [[n for n in old if n % 3 == k] for k in range(3)]
    assert rows.to_pylist() == [{"kind": k, "blocks": len(numbers), "gas": str(sum(numbers)),
                                 "last_block": max(numbers)} for k, numbers in enumerate(of_kind)]

    derived = derived_contract("gas_by_kind", rows.schema, sort=["kind"])
    assert not derived.partitioned
    table = ensure_table(place.catalog, place.namespace, derived)
    assert table.table().spec().fields == ()
    assert [table.table().schema().find_column_name(f.source_id)
            for f in table.table().sort_order().fields] == ["kind"]
    staged = table.stage([output.uri], branch="v1")
    table.set_main(staged)
    assert table.read().sort_by("kind").to_pylist() == rows.to_pylist()
    assert ensure_table(place.catalog, place.namespace, derived).table().metadata_location == \
        table.table().metadata_location  # the same contract again: nothing to commit


async def test_what_the_operator_refuses(place: Place) -> None:
    versions = two_versions(place)
    good = 'SELECT count(*) AS n FROM "chain.blocks"'
    with pytest.raises(ConfigError, match=r"^sql_transform: refused \(unknown-table\) at 1:27: the SQL reads "
                                          r"'chain\.logs', which is not among the task's pinned inputs"):
        await run_operator(place, payload(place, 'SELECT count(*) AS n FROM "chain.logs"', versions.old, 1))
    with pytest.raises(ConfigError, match=r"must declare exactly one output dataset; it declares a, b"):
        await run_operator(place, payload(place, good, versions.old, 1), writes=["a", "b"])
    with pytest.raises(ConfigError, match=r"^sql_transform: refused \(read-only\) at 1:1: .* not COPY"):
        await run_operator(place, payload(place, "COPY \"chain.blocks\" TO '/tmp/x.csv'", versions.old, 1))
    with pytest.raises(ConfigError, match=r'^sql_transform: DuckDB: Binder Error: Referenced column "nope"'):
        await run_operator(place, payload(place, 'SELECT nope FROM "chain.blocks"', versions.old, 1))
    with pytest.raises(CatalogError, match="has no such snapshot"):
        await run_operator(place, payload(place, good, 12345, 1))


def test_derived_tables_change_as_chain_tables_do(place: Place) -> None:
    base = pa.schema([("day", pa.int64()), ("n", pa.int32())])
    table = ensure_table(place.catalog, place.namespace, derived_contract("daily", base))
    wider = derived_contract("daily", pa.schema([("day", pa.int64()), ("n", pa.int64()),
                                                 ("m", pa.float64())]))
    ensure_table(place.catalog, place.namespace, wider)
    assert [(f.name, str(f.field_type)) for f in table.table().schema().fields] == [
        ("day", "long"), ("n", "long"), ("m", "double")]
    for bad, message in (
            (derived_contract("daily", pa.schema([("day", pa.int64()), ("n", pa.int64())])),
             "column 'm' is gone"),
            (derived_contract("daily", pa.schema([("block_number", pa.int64()), ("day", pa.int64()),
                                                  ("n", pa.int64()), ("m", pa.float64())])),
             "partitioned by nothing, the contract by truncate[10000](block_number); another partitioning "
             "needs a new table")):
        with pytest.raises(SchemaChangeError) as caught:
            ensure_table(place.catalog, place.namespace, bad)
        assert message in str(caught.value)
    partitioned = ensure_table(place.catalog, place.namespace, derived_contract(
        "by_block", pa.schema([("block_number", pa.int64()), ("n", pa.int64())])))
    unpartitioned = derived_contract("by_block", pa.schema([("n", pa.int64())]))
    with pytest.raises(SchemaChangeError, match=r"partitioned by truncate\[10000\]\(block_number\), the "
                                                r"contract by nothing \(unpartitioned\)"):
        ensure_table(place.catalog, place.namespace, unpartitioned)
    assert partitioned.table().spec().fields != ()
