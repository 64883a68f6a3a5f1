"""The object store as a local directory: ``ROOT/KEY`` files that pyarrow and DuckDB read directly.

A put writes a temporary file beside its target, fsyncs it and renames it into place, so a reader
sees the old object or the new one, never part of one; ``if_absent`` links the temporary file to
the target instead (``link`` fails when the target exists), so of two racing writers exactly one
wins. Temporary files (``.trace-tmp-*``) are never listed.

Unlike S3, a directory cannot hold both ``a`` and ``a/b``: such a put fails with one line. Files
written by pyarrow through :meth:`LocalObjectStore.pyarrow_path` are written in place (not
atomically, unlike an S3 upload, which appears whole when it completes).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tracekit.errors import ObjectExists, ObjectNotFound, ObjectStoreError
from tracekit.objects import check_key, check_prefix

TMP_PREFIX = ".trace-tmp-"


class LocalObjectStore:
    """The :class:`~tracekit.objects.ObjectStore` port on a directory."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().absolute()

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        path = self._path(key)
        tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("xb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if if_absent:
                os.link(tmp, path)
            else:
                os.replace(tmp, path)
        except FileExistsError as exc:
            if if_absent and path.is_file():
                raise ObjectExists(f"object store: {path} exists already") from exc
            raise ObjectStoreError(f"object store: cannot write {path}: {exc.strerror}") from exc
        except OSError as exc:
            raise ObjectStoreError(f"object store: cannot write {path}: {exc.strerror}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    def put_file(self, key: str, path: Path) -> None:
        """Copy ``path`` beside the target, fsync it, rename it into place (as :meth:`put`)."""
        target = self._path(key)
        tmp = target.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with path.open("rb") as source, tmp.open("xb") as handle:
                shutil.copyfileobj(source, handle, 1 << 20)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            raise ObjectStoreError(f"object store: cannot write {target} ({path}): {exc.strerror}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(f"object store: no object {path}") from exc
        except OSError as exc:
            raise ObjectStoreError(f"object store: cannot read {path}: {exc.strerror}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        check_prefix(prefix)
        start = self.root / prefix.rpartition("/")[0]
        found: dict[str, int] = {}
        for directory, _, files in os.walk(start):
            base = Path(directory)
            for name in files:
                if name.startswith(TMP_PREFIX):
                    continue
                path = base / name
                key = path.relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    found[key] = path.stat().st_size
                except OSError:  # deleted meanwhile
                    continue
        yield from sorted(found.items())

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            path = self._path(key)
            try:
                path.unlink(missing_ok=True)
            except (IsADirectoryError, NotADirectoryError):
                continue  # no object has this key (a "directory" of other keys)
            except OSError as exc:
                raise ObjectStoreError(f"object store: cannot delete {path}: {exc.strerror}") from exc

    def url(self, key: str) -> str:
        return str(self._path(key))

    def pyarrow_filesystem(self) -> Any:
        from pyarrow import fs

        return fs.LocalFileSystem()

    def pyarrow_path(self, key: str) -> str:
        """The file path; its directory is created (pyarrow's local filesystem does not create
        parents when it opens a file for writing, S3 needs none)."""
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ObjectStoreError(f"object store: cannot create {path.parent}: {exc.strerror}") from exc
        return str(path)

    def check(self) -> None:
        if not self.root.is_dir():
            raise ObjectStoreError(f"object store: directory {self.root} does not exist")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise ObjectStoreError(f"object store: directory {self.root} is not writable")
