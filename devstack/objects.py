"""An object store that is a local directory (``TRACE_OBJECT_STORE=/DIR`` or ``file:///DIR``),
which pyarrow and DuckDB read directly: ``up`` creates it, ``status`` probes it.

The default store is the bucket ``s3://datasets`` of the embedded SeaweedFS
(``devstack/seaweedfs.py``); an ``s3://`` store is not created here: ``up`` checks it
(``ObjectStore.check``) and ``status`` reports that check.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

from devstack.runfiles import make_dirs
from tracekit.errors import StackError


def ensure_object_dir(path: Path) -> Path:
    """Create the object-store directory; fail with one line when it is not writable."""
    try:
        make_dirs(path, mode=0o755)
    except OSError as exc:
        raise StackError(f"objects: cannot create {path}: {exc.strerror}") from exc
    if not objects_healthy(path):
        raise StackError(f"objects: {path} is not writable")
    return path


def objects_healthy(path: Path) -> bool:
    """A file can be created and removed in ``path``."""
    probe = path / f".health-{uuid.uuid4().hex}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
    except OSError:
        return False
    with contextlib.suppress(OSError):
        probe.unlink()
    return True
