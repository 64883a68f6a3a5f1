"""The object-store port: where datasets, results and scratch files live.

:class:`ObjectStore` is what the rest of Trace needs from a store: whole-object ``put`` (optionally
only when the key is free, the building block of commits) and ``put_file`` (a local file), ``get``,
``exists``, ``list``, ``delete``, the URL a reader (pyarrow, DuckDB, pyiceberg) opens, a pyarrow
filesystem, and ``check``. Keys are ``/``-separated relative paths (``datasets/blocks/part-0.parquet``),
the same on every adapter.

Adapters beside this module: ``objects_local`` (a directory), ``objects_s3`` (boto3; SeaweedFS,
MinIO, AWS S3) and ``objects_memory`` (a dict, for unit tests of logic).
``tracekit.objects_open.open_object_store`` picks one from a URL (:func:`parse_store_url`):
``s3://BUCKET[/PREFIX]``, ``file:///DIR`` or a plain directory path.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from tracekit.errors import ObjectStoreError, ObjectStoreUrlError

URL_FORMS = "use s3://BUCKET[/PREFIX], file:///DIR or a directory path"
MAX_KEY_BYTES = 1024  # S3's limit


class S3Config(BaseModel):
    """How to reach S3. ``endpoint`` None is AWS S3; credentials None are boto3's default chain."""

    model_config = ConfigDict(frozen=True)

    endpoint: str | None = None
    region: str = "us-east-1"
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    connect_timeout: float = Field(2.0, gt=0)
    read_timeout: float = Field(30.0, gt=0)
    max_attempts: int = Field(2, ge=1)


class ObjectStore(Protocol):
    """A flat namespace of immutable-by-convention objects under one root (bucket + prefix or dir)."""

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        """Store ``data`` at ``key`` whole (readers never see part of it). ``if_absent``: raise
        :class:`~tracekit.errors.ObjectExists` instead of replacing an existing object."""
        ...

    def put_file(self, key: str, path: Path) -> None:
        """Store the local file ``path`` at ``key`` whole, without reading it into memory (S3: a
        multipart upload above the adapter's threshold)."""
        ...

    def get(self, key: str) -> bytes:
        """The object's bytes; :class:`~tracekit.errors.ObjectNotFound` when there is none."""
        ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """``(key, size)`` of every object whose key starts with ``prefix``, sorted by key."""
        ...

    def delete(self, keys: Iterable[str]) -> None:
        """Delete ``keys``; a key without an object is not an error."""
        ...

    def url(self, key: str) -> str:
        """What a reader opens: ``s3://bucket/prefix/key`` or an absolute file path."""
        ...

    def pyarrow_filesystem(self) -> Any:
        """A ``pyarrow.fs.FileSystem`` reaching the objects; give it :meth:`pyarrow_path` paths."""
        ...

    def pyarrow_path(self, key: str) -> str:
        """``key`` as a path of :meth:`pyarrow_filesystem` (``bucket/prefix/key`` or a file path),
        ready to be opened for reading or writing."""
        ...

    def check(self) -> None:
        """Raise one :class:`~tracekit.errors.ObjectStoreError` line unless the store is reachable,
        exists and accepts our credentials."""
        ...


@dataclass(frozen=True)
class StoreLocation:
    """Where a store URL points: a directory, or an S3 bucket and key prefix ("" or ending in /)."""

    url: str
    directory: Path | None = None
    bucket: str | None = None
    prefix: str = ""


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_BUCKET_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def bucket_name_problem(name: str) -> str | None:
    """Why S3 would refuse ``name`` as a bucket name, or None when it is valid."""
    if not _BUCKET.fullmatch(name):
        return ("is not a valid bucket name (3-63 lowercase letters, digits, dots and hyphens, "
                "starting and ending with a letter or digit)")
    if ".." in name:
        return "is not a valid bucket name (two adjacent dots)"
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        pass
    else:
        return "is not a valid bucket name (an IP address)"
    if name.startswith(_BUCKET_RESERVED_PREFIXES) or name.endswith(_BUCKET_RESERVED_SUFFIXES):
        return "is not a valid bucket name (reserved prefix or suffix)"
    return None


def _masked(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=f"***@{parts.netloc.rsplit('@', 1)[1]}").geturl()


def _bad(url: str, problem: str) -> ObjectStoreUrlError:
    return ObjectStoreUrlError(f"object store URL {_masked(url)!r} {problem}; {URL_FORMS}")


def parse_store_url(url: str) -> StoreLocation:
    """``s3://BUCKET[/PREFIX]``, ``file:///DIR`` or a directory path; anything else is an
    :class:`~tracekit.errors.ObjectStoreUrlError` (a ``ConfigError``) naming the URL."""
    if not url.strip():
        raise _bad(url, "is empty")
    if any(ch in url for ch in "\x00\r\n"):
        raise _bad(url, "contains a control character")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "s3":
        return _parse_s3(url, parts.netloc, parts.path, parts.query or parts.fragment)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise _bad(url, f"names a host ({parts.netloc}); a file URL is file:///ABSOLUTE/DIR")
        if parts.query or parts.fragment or not parts.path.startswith("/"):
            raise _bad(url, "is not a file URL of an absolute directory")
        return StoreLocation(url, directory=Path(unquote(parts.path)))
    if not scheme or len(scheme) == 1:  # a plain path (a one-letter scheme is a Windows drive)
        return StoreLocation(url, directory=Path(url))
    raise _bad(url, f"has an unsupported scheme {parts.scheme}://")


def _parse_s3(url: str, netloc: str, path: str, extra: str) -> StoreLocation:
    if not netloc:
        raise _bad(url, "has no bucket")
    if "@" in netloc or ":" in netloc:
        raise _bad(url, "has credentials or a port in it; give the endpoint and credentials as "
                        "settings (TRACE_S3_ENDPOINT, TRACE_S3_ACCESS_KEY_ID, TRACE_S3_SECRET_ACCESS_KEY)")
    if extra:
        raise _bad(url, "has a query or fragment")
    problem = bucket_name_problem(netloc)
    if problem is not None:
        raise _bad(url, f"has a bucket {netloc!r} that {problem}")
    prefix = path.strip("/")
    if prefix:
        try:
            check_key(prefix)
        except ObjectStoreError as exc:
            raise _bad(url, "has an invalid key prefix (empty, '.' or '..' segments)") from exc
        prefix += "/"
    return StoreLocation(url, bucket=netloc, prefix=prefix)


def check_endpoint(endpoint: str) -> str:
    """``endpoint`` when it is an ``http(s)://host[:port]`` URL, else an ObjectStoreUrlError."""
    parts = urlsplit(endpoint)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise ObjectStoreUrlError(
            f"S3 endpoint {_masked(endpoint)!r} is not an http(s)://HOST[:PORT] URL (TRACE_S3_ENDPOINT)")
    return endpoint


def _segments_problem(text: str, *, partial_last: bool) -> str | None:
    if "\x00" in text or "\\" in text:
        return "contains a NUL or backslash"
    if text.startswith("/"):
        return "starts with /"
    segments = text.split("/")
    checked = segments[:-1] if partial_last else segments
    if any(segment in ("", ".", "..") for segment in checked):
        return "has an empty, '.' or '..' segment"
    if partial_last and segments[-1] in (".", ".."):
        return "has a '.' or '..' segment"
    if len(text.encode()) > MAX_KEY_BYTES:
        return f"is longer than {MAX_KEY_BYTES} bytes"
    return None


def check_key(key: str) -> str:
    """``key`` when it is a valid object key (relative, ``/``-separated, no ``.``/``..``/empty
    segment, at most 1024 bytes), else an :class:`~tracekit.errors.ObjectStoreError`."""
    problem = "is empty" if not key else _segments_problem(key, partial_last=False)
    if problem is not None:
        raise ObjectStoreError(f"object store: invalid object key {key!r}: it {problem}")
    return key


def check_prefix(prefix: str) -> str:
    """``prefix`` when it can start a valid key ("" lists everything; it need not end in /)."""
    problem = _segments_problem(prefix, partial_last=True) if prefix else None
    if problem is not None:
        raise ObjectStoreError(f"object store: invalid key prefix {prefix!r}: it {problem}")
    return prefix


def local_object_dir(store: str) -> Path | None:
    """The directory behind ``store`` (a path or ``file://`` URL), None for a remote store."""
    parsed = urlparse(store)
    if parsed.scheme == "file":
        return Path(parsed.path)
    if parsed.scheme and len(parsed.scheme) > 1:  # a one-letter scheme is a Windows drive
        return None
    return Path(store)
