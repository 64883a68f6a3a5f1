"""An in-memory object store, for unit tests of logic that uses the port (never in production).

Same key rules and errors as the real adapters (``if_absent`` raises ObjectExists, a missing key
ObjectNotFound); it has no pyarrow filesystem: code that hands objects to pyarrow is tested against
a local directory or S3 in the integration tests.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tracekit.errors import ObjectExists, ObjectNotFound, ObjectStoreError
from tracekit.objects import check_key, check_prefix


class MemoryObjectStore:
    """The :class:`~tracekit.objects.ObjectStore` port on a dict (thread-safe)."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryObjectStore({self.name!r}, {len(self._objects)} objects)"

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        check_key(key)
        with self._lock:
            if if_absent and key in self._objects:
                raise ObjectExists(f"object store: {self.url(key)} exists already")
            self._objects[key] = bytes(data)

    def put_file(self, key: str, path: Path) -> None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ObjectStoreError(f"object store: cannot read {path}: {exc.strerror}") from exc
        self.put(key, data)

    def get(self, key: str) -> bytes:
        check_key(key)
        with self._lock:
            try:
                return self._objects[key]
            except KeyError as exc:
                raise ObjectNotFound(f"object store: no object {self.url(key)}") from exc

    def exists(self, key: str) -> bool:
        check_key(key)
        with self._lock:
            return key in self._objects

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        check_prefix(prefix)
        with self._lock:
            found = sorted((key, len(data)) for key, data in self._objects.items() if key.startswith(prefix))
        yield from found

    def delete(self, keys: Iterable[str]) -> None:
        doomed = [check_key(key) for key in keys]
        with self._lock:
            for key in doomed:
                self._objects.pop(key, None)

    def url(self, key: str) -> str:
        return f"memory://{self.name}/{check_key(key)}"

    def pyarrow_filesystem(self) -> Any:
        raise ObjectStoreError("object store: the in-memory store has no pyarrow filesystem; "
                               "use a local directory")

    def pyarrow_path(self, key: str) -> str:
        return check_key(key)

    def check(self) -> None:
        return None
