"""Open the object store a URL names: the one place that chooses an adapter.

Kept apart from ``tracekit.objects`` (the port) because it imports the adapters, which import the
port: the modules of the kernel form no import cycle.
"""

from __future__ import annotations

from pathlib import Path

from tracekit.objects import ObjectStore, S3Config, parse_store_url


def open_object_store(url: str, s3: S3Config | None = None) -> ObjectStore:
    """``s3://BUCKET[/PREFIX]`` (with ``s3``: endpoint, region, credentials; None = AWS defaults),
    ``file:///DIR`` or a directory path. A malformed URL is an ObjectStoreUrlError (a ConfigError)
    naming it; nothing is contacted until the first call (:meth:`ObjectStore.check` verifies)."""
    location = parse_store_url(url)
    if location.bucket is None:
        from tracekit.objects_local import LocalObjectStore

        return LocalObjectStore(location.directory or Path(url))
    from tracekit.objects_s3 import S3ObjectStore  # boto3 loads only for S3 stores

    return S3ObjectStore(location.bucket, location.prefix, s3 or S3Config())
