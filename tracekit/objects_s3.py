"""The object store on S3 (AWS S3, MinIO, the embedded SeaweedFS) through boto3.

``if_absent`` is a conditional write (``If-None-Match: *``): S3 answers 412 when the key exists.
Every botocore error is mapped here, once, to one :class:`~tracekit.errors.ObjectStoreError` line
naming the problem (:func:`map_s3_error`): an outage (unreachable endpoint, 5xx, throttling) is an
:class:`~tracekit.errors.ObjectStoreUnavailable` (retryable); a missing bucket, rejected
credentials or a denied request are permanent. Timeouts are short (``S3Config``: connect 2 s, two
attempts), so an unreachable endpoint fails within a few seconds.

``list`` sorts the keys itself: AWS S3 lists in key order, but SeaweedFS lists directory by
directory (``d/a/2`` before ``d/a-1``), so the whole listing is read before the first key.

A conditional put retried by botocore after a lost response can find its own first attempt and
report :class:`~tracekit.errors.ObjectExists`; compare the content when that matters.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from tracekit.errors import (
    ObjectExists,
    ObjectNotFound,
    ObjectStoreError,
    ObjectStoreUnavailable,
)
from tracekit.objects import S3Config, check_endpoint, check_key, check_prefix

_CREDENTIAL_CODES = frozenset({"SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "ExpiredToken",
                               "InvalidClientTokenId", "AuthorizationHeaderMalformed"})
_OUTAGE_CODES = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout",
                           "RequestTimeTooSkewed", "ConditionalRequestConflict", "OperationAborted"})
_DELETE_BATCH = 1000  # S3's limit per DeleteObjects


def s3_client(config: S3Config) -> Any:
    """A boto3 S3 client for ``config`` (path-style addressing when an endpoint is given)."""
    if config.endpoint is not None:
        check_endpoint(config.endpoint)
    session = boto3.session.Session(
        aws_access_key_id=_secret(config.access_key_id),
        aws_secret_access_key=_secret(config.secret_access_key),
        region_name=config.region,
    )
    return session.client(
        "s3",
        endpoint_url=config.endpoint,
        config=Config(
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            retries={"max_attempts": config.max_attempts, "mode": "standard"},
            s3={"addressing_style": "path"} if config.endpoint is not None else None,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def _where(config: S3Config) -> str:
    return config.endpoint or f"AWS S3 ({config.region})"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectTimeoutError):
        return "connect timed out"
    if isinstance(exc, ReadTimeoutError):
        return "read timed out"
    found = re.search(r"\[Errno -?\d+\] ([^'\"()]+)", f"{exc} {getattr(exc, 'kwargs', {}).get('error', '')}")
    if found:
        return found.group(1).strip().rstrip(".")
    return "connection failed"


def map_s3_error(exc: Exception, config: S3Config, *, bucket: str | None = None,
                 key: str | None = None) -> ObjectStoreError:
    """The one-line :class:`ObjectStoreError` for a botocore error (raise it ``from exc``)."""
    where = _where(config)
    target = f"s3://{bucket}/{key}" if bucket and key is not None else f"s3://{bucket}" if bucket else where
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError,
                        ConnectionClosedError, ResponseStreamingError)):
        return ObjectStoreUnavailable(f"object store: cannot reach S3 at {where} ({_reason(exc)})")
    if isinstance(exc, NoCredentialsError):
        return ObjectStoreError("object store: no S3 credentials; set TRACE_S3_ACCESS_KEY_ID and "
                                "TRACE_S3_SECRET_ACCESS_KEY")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code == "NoSuchBucket":
            return ObjectStoreError(f"object store: bucket {bucket} does not exist at {where}")
        if code == "NoSuchKey" or (status == 404 and key is not None):
            return ObjectNotFound(f"object store: no object {target}")
        if status == 404:
            return ObjectStoreError(f"object store: S3 at {where} answered 404 Not Found for {target} "
                                    "(a missing bucket, or not an S3 endpoint)")
        if code == "PreconditionFailed" or status == 412:
            return ObjectExists(f"object store: {target} exists already")
        if code in _CREDENTIAL_CODES:
            return ObjectStoreError(
                f"object store: S3 at {where} rejected the credentials ({code}); check "
                "TRACE_S3_ACCESS_KEY_ID and TRACE_S3_SECRET_ACCESS_KEY")
        if code in ("AccessDenied", "403") or status == 403:
            return ObjectStoreError(f"object store: S3 at {where} denied access to {target} (AccessDenied)")
        if code in _OUTAGE_CODES or status >= 500:
            return ObjectStoreUnavailable(
                f"object store: S3 at {where} failed ({code or 'HTTP'} {status}); retry later")
        message = " ".join(str(error.get("Message", "")).split())
        return ObjectStoreError(f"object store: S3 at {where} refused the request on {target} "
                                f"({code or status}{': ' + message if message else ''})")
    if isinstance(exc, BotoCoreError):
        return ObjectStoreError(f"object store: {' '.join(str(exc).split())}")
    raise TypeError(f"not a botocore error: {exc!r}") from exc


class S3ObjectStore:
    """The :class:`~tracekit.objects.ObjectStore` port on ``s3://bucket/prefix``."""

    multipart_threshold = 64 * 1024 * 1024  # put_file: larger files go up in parts
    part_bytes = 16 * 1024 * 1024  # S3 takes parts of 5 MiB and more (but the last)

    def __init__(self, bucket: str, prefix: str, config: S3Config) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.config = config
        self._client = s3_client(config)

    def __repr__(self) -> str:
        return f"S3ObjectStore('s3://{self.bucket}/{self.prefix}', endpoint={self.config.endpoint!r})"

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _error(self, exc: Exception, key: str | None = None) -> ObjectStoreError:
        return map_s3_error(exc, self.config, bucket=self.bucket, key=key)

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        full = self._key(key)
        condition = {"IfNoneMatch": "*"} if if_absent else {}
        try:
            self._client.put_object(Bucket=self.bucket, Key=full, Body=data, **condition)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, full) from exc

    def put_file(self, key: str, path: Path) -> None:
        """One PUT up to :attr:`multipart_threshold` bytes, else a multipart upload of
        :attr:`part_bytes` parts (aborted when a part fails: nothing appears)."""
        full = self._key(key)
        try:
            size = path.stat().st_size
            with path.open("rb") as handle:
                if size <= self.multipart_threshold:
                    self._client.put_object(Bucket=self.bucket, Key=full, Body=handle)
                else:
                    self._multipart(full, handle)
        except OSError as exc:
            raise ObjectStoreError(f"object store: cannot read {path}: {exc.strerror}") from exc
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, full) from exc

    def _multipart(self, full: str, handle: BinaryIO) -> None:
        upload = self._client.create_multipart_upload(Bucket=self.bucket, Key=full)["UploadId"]
        try:
            parts: list[dict[str, Any]] = []
            while chunk := handle.read(self.part_bytes):
                number = len(parts) + 1
                answer = self._client.upload_part(Bucket=self.bucket, Key=full, UploadId=upload,
                                                  PartNumber=number, Body=chunk)
                parts.append({"ETag": answer["ETag"], "PartNumber": number})
            self._client.complete_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload,
                                                   MultipartUpload={"Parts": parts})
        except BaseException:
            with contextlib.suppress(BotoCoreError, ClientError):
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload)
            raise

    def get(self, key: str) -> bytes:
        full = self._key(key)
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=full)
            return bytes(response["Body"].read())
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, full) from exc

    def exists(self, key: str) -> bool:
        full = self._key(key)
        try:
            self._client.head_object(Bucket=self.bucket, Key=full)
        except ClientError as exc:
            if int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0) == 404:
                return False
            raise self._error(exc, full) from exc
        except BotoCoreError as exc:
            raise self._error(exc, full) from exc
        return True

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        full = self.prefix + check_prefix(prefix)
        cut = len(self.prefix)
        found: dict[str, int] = {}
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full)
            for page in pages:
                for item in page.get("Contents", ()):
                    found[str(item["Key"])[cut:]] = int(item["Size"])
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc) from exc
        yield from sorted(found.items())  # SeaweedFS lists directory by directory, not by key

    def delete(self, keys: Iterable[str]) -> None:
        batch: list[str] = []
        for key in keys:
            batch.append(self._key(key))
            if len(batch) == _DELETE_BATCH:
                self._delete(batch)
                batch = []
        if batch:
            self._delete(batch)

    def _delete(self, keys: Iterable[str]) -> None:
        try:
            response = self._client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True})
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc) from exc
        failed = response.get("Errors") or []
        if failed:
            first = failed[0]
            raise ObjectStoreError(f"object store: cannot delete s3://{self.bucket}/{first.get('Key')} "
                                   f"({first.get('Code')}; {len(failed)} keys failed)")

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def pyarrow_filesystem(self) -> Any:
        from pyarrow import fs

        options: dict[str, Any] = {
            "region": self.config.region,
            "connect_timeout": self.config.connect_timeout,
            "request_timeout": self.config.read_timeout,
            "retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=self.config.max_attempts),
            "allow_bucket_creation": False,
            "allow_bucket_deletion": False,
        }
        if self.config.access_key_id is not None and self.config.secret_access_key is not None:
            options["access_key"] = self.config.access_key_id.get_secret_value()
            options["secret_key"] = self.config.secret_access_key.get_secret_value()
        if self.config.endpoint is not None:
            parts = urlsplit(self.config.endpoint)
            options["endpoint_override"] = parts.netloc
            options["scheme"] = parts.scheme
        return fs.S3FileSystem(**options)

    def pyarrow_path(self, key: str) -> str:
        return f"{self.bucket}/{self._key(key)}"

    def check(self) -> None:
        try:
            self._client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc) from exc
