"""The object-store port: where datasets, results and scratch files live.

Today one implementation: a local directory (a path or a ``file://`` URL), which pyarrow and
DuckDB read directly. A store given as another URL (``s3://...``) is remote; the S3 adapter lands
beside this module.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse


def local_object_dir(store: str) -> Path | None:
    """The directory behind ``store`` (a path or ``file://`` URL), None for a remote store."""
    parsed = urlparse(store)
    if parsed.scheme == "file":
        return Path(parsed.path)
    if parsed.scheme and len(parsed.scheme) > 1:  # a one-letter scheme is a Windows drive
        return None
    return Path(store)
