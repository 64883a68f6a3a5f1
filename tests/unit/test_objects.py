"""The object-store port without a server: URL parsing, key rules, the in-memory fake, the mapping
of botocore errors to one line, and the S3 settings (credentials generated once into secrets.json)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from tracekit.config import Settings
from tracekit.errors import (
    ConfigError,
    ObjectExists,
    ObjectNotFound,
    ObjectStoreError,
    ObjectStoreUnavailable,
    RetryableError,
)
from tracekit.objects import (
    URL_FORMS,
    S3Config,
    StoreLocation,
    bucket_name_problem,
    check_endpoint,
    check_key,
    check_prefix,
    parse_store_url,
)
from tracekit.objects_local import LocalObjectStore
from tracekit.objects_memory import MemoryObjectStore
from tracekit.objects_open import open_object_store
from tracekit.objects_s3 import S3ObjectStore, map_s3_error

# -- URLs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "expected"), [
    ("s3://datasets", StoreLocation("s3://datasets", bucket="datasets", prefix="")),
    ("s3://datasets/", StoreLocation("s3://datasets/", bucket="datasets", prefix="")),
    ("s3://datasets/wh/v1/", StoreLocation("s3://datasets/wh/v1/", bucket="datasets", prefix="wh/v1/")),
    ("S3://my.bucket-1/x", StoreLocation("S3://my.bucket-1/x", bucket="my.bucket-1", prefix="x/")),
    ("file:///var/tmp/objects", StoreLocation("file:///var/tmp/objects", directory=Path("/var/tmp/objects"))),
    ("file://localhost/a%20b", StoreLocation("file://localhost/a%20b", directory=Path("/a b"))),
    ("/var/tmp/objects", StoreLocation("/var/tmp/objects", directory=Path("/var/tmp/objects"))),
    (".trace/objects", StoreLocation(".trace/objects", directory=Path(".trace/objects"))),
    ("C:/objects", StoreLocation("C:/objects", directory=Path("C:/objects"))),
])
def test_parse_store_url(url: str, expected: StoreLocation) -> None:
    assert parse_store_url(url) == expected


@pytest.mark.parametrize(("url", "problem"), [
    ("", "is empty"),
    ("s3://", "has no bucket"),
    ("s3:///datasets", "has no bucket"),
    ("s3:datasets", "has no bucket"),
    ("ftp://host/dir", "has an unsupported scheme ftp://"),
    ("gs://datasets", "has an unsupported scheme gs://"),
    ("s3://datasets:9000/x", "has credentials or a port in it; give the endpoint and credentials as settings "
                             "(TRACE_S3_ENDPOINT, TRACE_S3_ACCESS_KEY_ID, TRACE_S3_SECRET_ACCESS_KEY)"),
    ("s3://datasets/x?versionId=1", "has a query or fragment"),
    ("s3://datasets/a/../b", "has an invalid key prefix (empty, '.' or '..' segments)"),
    ("s3://datasets/a//b", "has an invalid key prefix (empty, '.' or '..' segments)"),
    ("s3://ab", "has a bucket 'ab' that is not a valid bucket name (3-63 lowercase letters, digits, dots and "
                "hyphens, starting and ending with a letter or digit)"),
    ("s3://Datasets", "has a bucket 'Datasets' that is not a valid bucket name (3-63 lowercase letters, "
                      "digits, dots and hyphens, starting and ending with a letter or digit)"),
    ("s3://data..sets", "has a bucket 'data..sets' that is not a valid bucket name (two adjacent dots)"),
    ("s3://192.168.1.10", "has a bucket '192.168.1.10' that is not a valid bucket name (an IP address)"),
    ("s3://xn--datasets",
     "has a bucket 'xn--datasets' that is not a valid bucket name (reserved prefix or suffix)"),
    ("file://host/dir", "names a host (host); a file URL is file:///ABSOLUTE/DIR"),
    ("file:relative", "is not a file URL of an absolute directory"),
])
def test_a_malformed_url_is_one_config_error_naming_it(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_object_store(url)
    assert str(caught.value) == f"object store URL {url!r} {problem}; {URL_FORMS}"
    assert isinstance(caught.value, ObjectStoreError) and not isinstance(caught.value, RetryableError)


def test_a_url_with_a_password_is_named_without_it() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_store_url("s3://key:hunter2@datasets/x")
    assert "hunter2" not in str(caught.value)
    assert str(caught.value).startswith("object store URL 's3://***@datasets/x' has credentials")


def test_open_object_store_picks_the_adapter() -> None:
    s3 = open_object_store("s3://datasets/wh", S3Config(endpoint="http://127.0.0.1:1"))
    assert isinstance(s3, S3ObjectStore)
    assert s3.url("t/part-0.parquet") == "s3://datasets/wh/t/part-0.parquet"
    assert s3.pyarrow_path("t/part-0.parquet") == "datasets/wh/t/part-0.parquet"
    local = open_object_store("file:///var/tmp/objects")
    assert isinstance(local, LocalObjectStore)
    assert local.url("t/part-0.parquet") == "/var/tmp/objects/t/part-0.parquet"


@pytest.mark.parametrize("endpoint", ["127.0.0.1:9000", "ftp://host", "http://", "http://host:0", "http://h:x"])
def test_an_endpoint_must_be_an_http_url(endpoint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_endpoint(endpoint)
    assert str(caught.value) == (f"S3 endpoint {endpoint!r} is not an http(s)://HOST[:PORT] URL "
                                 "(TRACE_S3_ENDPOINT)")


@pytest.mark.parametrize("name", ["abc", "datasets", "trace.results-2026", "a" * 63, "1st-bucket"])
def test_valid_bucket_names(name: str) -> None:
    assert bucket_name_problem(name) is None


@pytest.mark.parametrize("name", ["a" * 64, "-abc", "abc-", "a_b", "ab", "my-s3alias"])
def test_invalid_bucket_names(name: str) -> None:
    assert bucket_name_problem(name) is not None


# -- keys ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["a", "datasets/blocks/part-0.parquet", ".hidden", "a b/c", "é/ü"])
def test_valid_keys(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(("key", "problem"), [
    ("", "is empty"), ("/a", "starts with /"), ("a/", "has an empty, '.' or '..' segment"),
    ("a//b", "has an empty, '.' or '..' segment"), ("a/../b", "has an empty, '.' or '..' segment"),
    ("./a", "has an empty, '.' or '..' segment"), ("a\\b", "contains a NUL or backslash"),
    ("a\x00", "contains a NUL or backslash"), ("k" * 1025, "is longer than 1024 bytes"),
])
def test_invalid_keys(key: str, problem: str) -> None:
    with pytest.raises(ObjectStoreError) as caught:
        check_key(key)
    assert str(caught.value) == f"object store: invalid object key {key!r}: it {problem}"


@pytest.mark.parametrize("prefix", ["", "a", "a/", "a/b-", "a/.hid"])
def test_valid_prefixes(prefix: str) -> None:
    assert check_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["/", "/a", "a//", "../", "a/..", "a/."])
def test_invalid_prefixes(prefix: str) -> None:
    with pytest.raises(ObjectStoreError, match=r"^object store: invalid key prefix"):
        check_prefix(prefix)


# -- the in-memory fake ------------------------------------------------------------------------------


def test_memory_store_round_trip() -> None:
    store = MemoryObjectStore("t")
    store.check()
    store.put("b/2", b"22")
    store.put("a-1", b"1")
    store.put("b/1", bytearray(b"x"))
    assert store.get("b/1") == b"x" and store.exists("a-1") and not store.exists("b")
    assert list(store.list()) == [("a-1", 1), ("b/1", 1), ("b/2", 2)]
    assert list(store.list("b/")) == [("b/1", 1), ("b/2", 2)]
    store.delete(["b/1", "never"])
    assert [key for key, _ in store.list()] == ["a-1", "b/2"]
    assert store.url("b/2") == "memory://t/b/2"
    with pytest.raises(ObjectNotFound) as caught:
        store.get("b/1")
    assert str(caught.value) == "object store: no object memory://t/b/1"


def test_memory_store_if_absent() -> None:
    store = MemoryObjectStore()
    store.put("manifest", b"one", if_absent=True)
    with pytest.raises(ObjectExists) as caught:
        store.put("manifest", b"two", if_absent=True)
    assert str(caught.value) == "object store: memory://memory/manifest exists already"
    assert store.get("manifest") == b"one"
    store.put("manifest", b"three")
    assert store.get("manifest") == b"three"


def test_memory_store_checks_keys_and_has_no_pyarrow_filesystem() -> None:
    store = MemoryObjectStore()
    with pytest.raises(ObjectStoreError, match=r"invalid object key '\.\./x'"):
        store.put("../x", b"")
    with pytest.raises(ObjectStoreError, match="has no pyarrow filesystem"):
        store.pyarrow_filesystem()


KEYS = st.from_regex(r"[a-c]{1,2}(/[a-c-]{1,2}){0,2}", fullmatch=True)
PREFIXES = st.from_regex(r"([a-c]{1,2}(/[a-c-]?)?)?", fullmatch=True)


@given(st.dictionaries(KEYS, st.binary(max_size=4)), PREFIXES)
def test_memory_store_list_is_sorted_and_filtered_by_prefix(objects: dict[str, bytes], prefix: str) -> None:
    store = MemoryObjectStore()
    for key, data in objects.items():
        store.put(key, data)
    listed = list(store.list(prefix))
    assert listed == sorted((k, len(v)) for k, v in objects.items() if k.startswith(prefix))


# -- botocore errors as one line -------------------------------------------------------------------

CONFIG = S3Config(endpoint="http://127.0.0.1:18333")


def _client_error(code: str, status: int, operation: str = "PutObject") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "it says so"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


@pytest.mark.parametrize(("exc", "kind", "message"), [
    (_client_error("NoSuchBucket", 404), ObjectStoreError,
     "object store: bucket datasets does not exist at http://127.0.0.1:18333"),
    (_client_error("NoSuchKey", 404, "GetObject"), ObjectNotFound, "object store: no object s3://datasets/k"),
    (_client_error("PreconditionFailed", 412), ObjectExists, "object store: s3://datasets/k exists already"),
    (_client_error("SignatureDoesNotMatch", 403), ObjectStoreError,
     "object store: S3 at http://127.0.0.1:18333 rejected the credentials (SignatureDoesNotMatch); check "
     "TRACE_S3_ACCESS_KEY_ID and TRACE_S3_SECRET_ACCESS_KEY"),
    (_client_error("AccessDenied", 403), ObjectStoreError,
     "object store: S3 at http://127.0.0.1:18333 denied access to s3://datasets/k (AccessDenied)"),
    (_client_error("SlowDown", 503), ObjectStoreUnavailable,
     "object store: S3 at http://127.0.0.1:18333 failed (SlowDown 503); retry later"),
    (_client_error("InternalError", 500), ObjectStoreUnavailable,
     "object store: S3 at http://127.0.0.1:18333 failed (InternalError 500); retry later"),
    (_client_error("EntityTooLarge", 400), ObjectStoreError,
     "object store: S3 at http://127.0.0.1:18333 refused the request on s3://datasets/k "
     "(EntityTooLarge: it says so)"),
    (EndpointConnectionError(endpoint_url="http://127.0.0.1:18333/datasets/k"), ObjectStoreUnavailable,
     "object store: cannot reach S3 at http://127.0.0.1:18333 (connection failed)"),
    (NoCredentialsError(), ObjectStoreError,
     "object store: no S3 credentials; set TRACE_S3_ACCESS_KEY_ID and TRACE_S3_SECRET_ACCESS_KEY"),
])
def test_botocore_errors_map_to_one_line(exc: Exception, kind: type[ObjectStoreError], message: str) -> None:
    mapped = map_s3_error(exc, CONFIG, bucket="datasets", key="k")
    assert type(mapped) is kind
    assert str(mapped) == message
    assert isinstance(mapped, RetryableError) == (kind is ObjectStoreUnavailable)


def test_a_bare_404_on_a_bucket_names_both_causes() -> None:
    mapped = map_s3_error(_client_error("404", 404, "ListObjectsV2"), CONFIG, bucket="datasets")
    assert str(mapped) == ("object store: S3 at http://127.0.0.1:18333 answered 404 Not Found for "
                           "s3://datasets (a missing bucket, or not an S3 endpoint)")


# -- settings ----------------------------------------------------------------------------------------


def test_s3_settings_default_to_the_embedded_server_with_generated_credentials(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", s3_port=18999)
    config = settings.s3_config()
    assert config.endpoint == "http://127.0.0.1:18999" and config.region == "us-east-1"
    assert config.access_key_id is not None and config.secret_access_key is not None
    key_id = config.access_key_id.get_secret_value()
    assert key_id.startswith("TRACE") and key_id.isalnum()
    assert settings.s3_config() == config  # generated once
    secrets_file = tmp_path / "home" / "secrets.json"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert config.secret_access_key.get_secret_value() not in repr(config)


def test_an_old_secrets_file_gains_the_s3_keys_and_keeps_its_own(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    old = {"api_token": "a" * 20, "worker_token": "w" * 20, "dispatcher_secret": "d" * 20}
    (home / "secrets.json").write_text(json.dumps(old))
    config = Settings(home=home).s3_config()
    stored = json.loads((home / "secrets.json").read_text())
    assert {k: stored[k] for k in old} == old
    assert config.secret_access_key is not None
    assert stored["s3_secret_access_key"] == config.secret_access_key.get_secret_value()
    credentials = Settings(home=home).credentials()
    assert credentials.api_token == "a" * 20 and credentials.task_secret == b"d" * 20


def test_status_does_not_create_s3_credentials(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no S3 credentials in"):
        Settings(home=tmp_path / "home").s3_config(create_secrets=False)
    assert not (tmp_path / "home").exists()


def test_an_external_endpoint_uses_the_given_credentials_or_none(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", s3_endpoint="https://s3.eu-west-1.amazonaws.com",
                        s3_region="eu-west-1", s3_access_key_id=SecretStr("AKIA1"),
                        s3_secret_access_key=SecretStr("s"))
    config = settings.s3_config()
    assert (config.endpoint, config.region) == ("https://s3.eu-west-1.amazonaws.com", "eu-west-1")
    assert config.access_key_id == SecretStr("AKIA1")
    bare = Settings(home=tmp_path / "home", s3_endpoint="http://minio:9000").s3_config()
    assert bare.access_key_id is None and bare.secret_access_key is None  # boto3's default chain
    assert not (tmp_path / "home").exists()


def test_every_setting_description_renders_in_help() -> None:
    """`trace up --help` renders descriptions as rich markup: `[/PREFIX]` would be a closing tag."""
    from rich.text import Text

    for name, field in Settings.model_fields.items():
        assert field.description, name
        assert Text.from_markup(field.description).plain == field.description, name
