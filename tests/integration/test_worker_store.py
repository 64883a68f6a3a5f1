"""The worker's object store: large local files go up whole (multipart on S3), and `trace worker
run` refuses a store it cannot use with one line, before it takes any task."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.process import free_port
from tests.integration.object_stores import TestStore
from tracekit.objects import S3Config
from tracekit.objects_s3 import S3ObjectStore, s3_client

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_put_file_stores_a_large_file_whole(object_store: TestStore, tmp_path: Path) -> None:
    """12 MiB through put_file: on S3 as a multipart upload of three parts (lowered thresholds)."""
    store = object_store.store
    if isinstance(store, S3ObjectStore):
        store.multipart_threshold = store.part_bytes = 5 * 1024 * 1024  # S3's smallest part
    data = os.urandom(12 * 1024 * 1024)
    (tmp_path / "big.bin").write_bytes(data)
    store.put_file("put-file/big.bin", tmp_path / "big.bin")
    (tmp_path / "small.bin").write_bytes(b"small")
    store.put_file("put-file/small.bin", tmp_path / "small.bin")
    assert dict(store.list("put-file/")) == {"put-file/big.bin": len(data), "put-file/small.bin": 5}
    assert hashlib.sha256(store.get("put-file/big.bin")).digest() == hashlib.sha256(data).digest()
    assert store.get("put-file/small.bin") == b"small"
    if isinstance(store, S3ObjectStore):  # it really went up in parts: the ETag counts them
        head = s3_client(store.config).head_object(Bucket=store.bucket, Key=f"{store.prefix}put-file/big.bin")
        assert head["ETag"].strip('"').endswith("-3")


def _worker(env: dict[str, str], home: Path) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_")}
    environ.update({"TRACE_HOME": str(home), "TRACE_DISPATCHER_URL": f"http://127.0.0.1:{free_port()}",
                    "TRACE_WORKER_TOKEN": "w", "TRACE_API_TOKEN": "a", "TRACE_DISPATCHER_SECRET": "s",
                    "TRACE_QUEUE": "pg", "TRACE_DATABASE_URL": f"postgresql://x@127.0.0.1:{free_port()}/x",
                    **env})
    return subprocess.run([sys.executable, "-m", "tracecli", "worker", "run"], env=environ,
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_store_the_worker_cannot_use_is_one_line(s3_config: S3Config, tmp_path: Path) -> None:
    """A malformed URL, an unreachable S3, a missing bucket, wrong credentials, a directory that
    cannot be made: exit 1 with one line naming the problem; no bucket is created."""
    endpoint = str(s3_config.endpoint)
    assert s3_config.access_key_id and s3_config.secret_access_key
    good = {"TRACE_OBJECT_STORE": "s3://datasets/it-worker", "TRACE_S3_ENDPOINT": endpoint,
            "TRACE_S3_ACCESS_KEY_ID": s3_config.access_key_id.get_secret_value(),
            "TRACE_S3_SECRET_ACCESS_KEY": s3_config.secret_access_key.get_secret_value()}
    dead = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "a-file").write_text("not a directory")
    cases = [
        ({"TRACE_OBJECT_STORE": "s3://"},
         "object store URL 's3://' has no bucket; use s3://BUCKET[/PREFIX], file:///DIR or a directory path"),
        ({"TRACE_OBJECT_STORE": "ftp://host/x"},
         "object store URL 'ftp://host/x' has an unsupported scheme ftp://; use s3://BUCKET[/PREFIX], "
         "file:///DIR or a directory path"),
        ({"TRACE_S3_ENDPOINT": dead}, f"object store: cannot reach S3 at {dead} (Connection refused)"),
        ({"TRACE_OBJECT_STORE": "s3://trace-missing"},
         f"object store: bucket trace-missing does not exist at {endpoint}"),
        ({"TRACE_S3_SECRET_ACCESS_KEY": "wrong"},
         f"object store: S3 at {endpoint} rejected the credentials (SignatureDoesNotMatch); check "
         "TRACE_S3_ACCESS_KEY_ID and TRACE_S3_SECRET_ACCESS_KEY"),
        ({"TRACE_OBJECT_STORE": str(tmp_path / "a-file" / "objects")},
         f"object store: cannot create {tmp_path / 'a-file' / 'objects'}: Not a directory"),
    ]
    buckets = {b["Name"] for b in s3_client(s3_config).list_buckets()["Buckets"]}
    for change, message in cases:
        result = _worker({**good, **change}, tmp_path / "home")
        assert (result.returncode, result.stderr.splitlines()) == (1, [f"error: {message}"]), change
    assert {b["Name"] for b in s3_client(s3_config).list_buckets()["Buckets"]} == buckets
