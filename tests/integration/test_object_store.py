"""The object-store port on real stores: the same tests on S3 (the session's SeaweedFS) and on a
local directory; then bad input against S3, each one line naming the problem, changing nothing."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import SecretStr

from devstack.process import free_port
from tracekit.errors import (
    ConfigError,
    ObjectExists,
    ObjectNotFound,
    ObjectStoreError,
    ObjectStoreUnavailable,
    RetryableError,
)
from tracekit.objects import URL_FORMS, ObjectStore, S3Config
from tracekit.objects_open import open_object_store
from tracekit.objects_s3 import s3_client

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def _unique() -> str:
    return f"it-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["s3", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """An empty store: a fresh prefix of the ``scratch`` bucket, or a fresh directory (file:// URL)."""
    if request.param == "s3":
        config: S3Config = request.getfixturevalue("s3_config")
        return open_object_store(f"s3://scratch/{_unique()}", config)
    directory = tmp_path / "objects"
    directory.mkdir()
    return open_object_store(directory.as_uri())


def _every_call(store: ObjectStore) -> list[Callable[[], object]]:
    """Each call of the port that contacts the store (the bad-input tests expect each to fail)."""
    return [store.check, lambda: store.put("k", b"x"), lambda: store.put("k", b"x", if_absent=True),
            lambda: store.get("k"), lambda: list(store.list()), lambda: store.delete(["k"])]


def _buckets(config: S3Config) -> set[str]:
    return {str(b["Name"]) for b in s3_client(config).list_buckets()["Buckets"]}


# -- the port, on both adapters ------------------------------------------------------------------


def test_put_get_exists_list_delete_round_trip(store: ObjectStore) -> None:
    store.check()
    assert list(store.list()) == []
    store.put("blocks/part-0.bin", b"abc")
    store.put("blocks/part-1.bin", b"")
    store.put("readme", b"hello")

    assert store.get("blocks/part-0.bin") == b"abc"
    assert store.get("blocks/part-1.bin") == b""
    assert store.exists("readme") and not store.exists("blocks/part-2.bin")
    assert not store.exists("blocks")  # a "directory" of keys is not an object
    assert list(store.list()) == [("blocks/part-0.bin", 3), ("blocks/part-1.bin", 0), ("readme", 5)]
    assert list(store.list("blocks/")) == [("blocks/part-0.bin", 3), ("blocks/part-1.bin", 0)]

    store.delete(["blocks/part-0.bin", "never-written"])
    assert not store.exists("blocks/part-0.bin")
    assert [key for key, _ in store.list()] == ["blocks/part-1.bin", "readme"]
    with pytest.raises(ObjectNotFound) as caught:
        store.get("blocks/part-0.bin")
    assert str(caught.value) == f"object store: no object {store.url('blocks/part-0.bin')}"


def test_put_replaces_and_if_absent_refuses_an_existing_key(store: ObjectStore) -> None:
    store.put("manifest.json", b"one")
    store.put("manifest.json", b"two")
    assert store.get("manifest.json") == b"two"

    with pytest.raises(ObjectExists) as caught:
        store.put("manifest.json", b"three", if_absent=True)
    assert str(caught.value) == f"object store: {store.url('manifest.json')} exists already"
    assert not isinstance(caught.value, RetryableError)
    assert store.get("manifest.json") == b"two"

    store.put("fresh.json", b"x", if_absent=True)
    assert store.get("fresh.json") == b"x"
    assert [key for key, _ in store.list()] == ["fresh.json", "manifest.json"]  # no temporary files


def test_list_is_sorted_by_key_and_a_prefix_need_not_end_at_a_slash(store: ObjectStore) -> None:
    for key in ("d/b", "d/a/2", "d/a-1", "e"):
        store.put(key, key.encode())
    assert list(store.list("d/a")) == [("d/a-1", 5), ("d/a/2", 5)]
    assert [key for key, _ in store.list("d/")] == ["d/a-1", "d/a/2", "d/b"]
    assert list(store.list("x")) == []


def test_delete_many_keys(store: ObjectStore) -> None:
    keys = [f"chunks/{n:04d}" for n in range(40)]
    for key in keys:
        store.put(key, b"0")
    assert [key for key, _ in store.list("chunks/")] == keys
    store.delete(keys)
    assert list(store.list()) == []


def test_pyarrow_writes_and_reads_parquet_through_the_store(store: ObjectStore) -> None:
    table = pa.table({"block": pa.array([1, 2, 3], pa.int64()), "hash": ["0xa", "0xb", "0xc"]})
    filesystem = store.pyarrow_filesystem()
    path = store.pyarrow_path("datasets/blocks/part-0.parquet")
    pq.write_table(table, path, filesystem=filesystem)

    assert pq.read_table(path, filesystem=filesystem).equals(table)
    assert store.get("datasets/blocks/part-0.parquet")[:4] == b"PAR1"
    assert [key for key, _ in store.list()] == ["datasets/blocks/part-0.parquet"]
    url = store.url("datasets/blocks/part-0.parquet")
    assert url.startswith("s3://scratch/it-") if url.startswith("s3://") else Path(url).is_file()


# -- bad input: one line, nothing changed ----------------------------------------------------------


def test_a_malformed_url_is_one_line_and_contacts_nothing(s3_config: S3Config) -> None:
    before = _buckets(s3_config)
    with pytest.raises(ConfigError) as caught:
        open_object_store("s3://Trace_Datasets/x", s3_config)
    assert str(caught.value) == (
        "object store URL 's3://Trace_Datasets/x' has a bucket 'Trace_Datasets' that is not a valid "
        "bucket name (3-63 lowercase letters, digits, dots and hyphens, starting and ending with a letter "
        f"or digit); {URL_FORMS}")
    assert isinstance(caught.value, ObjectStoreError)
    with pytest.raises(ConfigError) as unsupported:
        open_object_store("ftp://host/dir", s3_config)
    assert str(unsupported.value) == (
        f"object store URL 'ftp://host/dir' has an unsupported scheme ftp://; {URL_FORMS}")
    assert _buckets(s3_config) == before


def test_an_unreachable_endpoint_is_one_retryable_line_within_seconds(s3_config: S3Config) -> None:
    closed = free_port()
    endpoint = f"http://127.0.0.1:{closed}"
    store = open_object_store("s3://datasets/x", s3_config.model_copy(update={"endpoint": endpoint}))
    expected = f"object store: cannot reach S3 at {endpoint} (Connection refused)"
    for action in _every_call(store):
        began = time.monotonic()
        with pytest.raises(ObjectStoreUnavailable) as caught:
            action()
        assert time.monotonic() - began < 5
        assert str(caught.value) == expected
        assert isinstance(caught.value, RetryableError)


def test_a_missing_bucket_is_one_line_and_is_not_created(s3_config: S3Config) -> None:
    store = open_object_store("s3://trace-no-such-bucket/x", s3_config)
    expected = f"object store: bucket trace-no-such-bucket does not exist at {s3_config.endpoint}"
    for action in _every_call(store):
        with pytest.raises(ObjectStoreError) as caught:
            action()
        assert str(caught.value) == expected
        assert not isinstance(caught.value, RetryableError)
    assert "trace-no-such-bucket" not in _buckets(s3_config)


@pytest.mark.parametrize(("field", "code"), [("secret_access_key", "SignatureDoesNotMatch"),
                                             ("access_key_id", "InvalidAccessKeyId")])
def test_wrong_credentials_are_one_line_and_write_nothing(s3_config: S3Config, field: str, code: str) -> None:
    prefix = _unique()
    wrong = s3_config.model_copy(update={field: SecretStr("wrong")})
    store = open_object_store(f"s3://scratch/{prefix}", wrong)
    expected = (f"object store: S3 at {s3_config.endpoint} rejected the credentials ({code}); check "
                "TRACE_S3_ACCESS_KEY_ID and TRACE_S3_SECRET_ACCESS_KEY")
    for action in _every_call(store):
        with pytest.raises(ObjectStoreError) as caught:
            action()
        assert str(caught.value) == expected
        assert not isinstance(caught.value, RetryableError)
    assert list(open_object_store(f"s3://scratch/{prefix}", s3_config).list()) == []


def test_a_missing_directory_is_one_line_and_is_not_created(tmp_path: Path) -> None:
    store = open_object_store(str(tmp_path / "absent"))
    with pytest.raises(ObjectStoreError) as caught:
        store.check()
    assert str(caught.value) == f"object store: directory {tmp_path / 'absent'} does not exist"
    assert not (tmp_path / "absent").exists()
