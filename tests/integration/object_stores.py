"""An object store for a test: on the session's SeaweedFS (a fresh prefix of ``datasets``) or in a
fresh directory, with what a worker subprocess needs to open the same store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from dispatcher.worker.context import store_uri
from tracecli.demo import read_output
from tracekit.objects import ObjectStore, S3Config
from tracekit.objects_open import open_object_store


@dataclass(frozen=True)
class TestStore:
    """``url`` (``s3://datasets/PREFIX`` or ``file:///DIR``), ``s3`` (None for a directory) and the
    opened ``store``."""

    __test__ = False  # not a test class

    url: str
    s3: S3Config | None
    store: ObjectStore

    @classmethod
    def open(cls, url: str, s3: S3Config | None) -> TestStore:
        return cls(url, s3, open_object_store(url, s3))

    @property
    def kind(self) -> str:
        return "s3" if self.s3 is not None else "dir"

    def child(self, name: str) -> TestStore:
        """The same store under ``name`` (an S3 key prefix or a subdirectory)."""
        return TestStore.open(f"{self.url}/{name}", self.s3)

    def env(self) -> dict[str, str]:
        """``TRACE_OBJECT_STORE`` and the S3 settings that open this store in a subprocess."""
        env = {"TRACE_OBJECT_STORE": self.url}
        if self.s3 is not None:
            assert self.s3.endpoint and self.s3.access_key_id and self.s3.secret_access_key
            env.update(TRACE_S3_ENDPOINT=self.s3.endpoint,
                       TRACE_S3_ACCESS_KEY_ID=self.s3.access_key_id.get_secret_value(),
                       TRACE_S3_SECRET_ACCESS_KEY=self.s3.secret_access_key.get_secret_value())
        return env

    def keys(self, prefix: str = "") -> list[str]:
        return [key for key, _ in self.store.list(prefix)]

    def read(self, uri: str, columns: list[str] | None = None) -> tuple[pa.Table, str]:
        """The Parquet file at ``uri`` (read through the port's pyarrow filesystem) and its sha256."""
        table: pa.Table
        table, sha256 = read_output(self.store, uri, columns)
        return table, sha256

    def read_key(self, key: str) -> pa.Table:
        return self.read(self.uri_of(key))[0]

    def uri_of(self, key: str) -> str:
        """The URI a worker reports for ``key`` (``s3://...`` or ``file:///...``)."""
        return store_uri(self.store, key)


def new_store(kind: str, name: str, *, s3: S3Config | None = None, directory: Path | None = None
              ) -> TestStore:
    """A fresh store: ``s3://datasets/NAME`` (with ``s3``) or the directory ``directory/NAME``."""
    if kind == "s3":
        return TestStore.open(f"s3://datasets/{name}", s3)
    assert directory is not None
    path = directory / name
    path.mkdir(parents=True)
    return TestStore.open(path.as_uri(), None)
