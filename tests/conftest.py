"""Shared test setup: no TRACE_* setting leaks into a test, and platformdirs has a runtime dir.

Under ``filterwarnings = error`` platformdirs' ``RuntimeDirWarning`` (XDG_RUNTIME_DIR unset, or not
mode 0700) would fail imports, so a private runtime dir is set before any test module is imported.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest


def _ensure_runtime_dir() -> None:
    if os.environ.get("XDG_RUNTIME_DIR"):
        return
    path = os.path.join(tempfile.gettempdir(), f"trace-test-runtime-{os.getuid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    os.environ["XDG_RUNTIME_DIR"] = path


_ensure_runtime_dir()


@pytest.fixture(autouse=True)
def _no_trace_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts without TRACE_* variables (they would override Settings defaults)."""
    for name in [n for n in os.environ if n.startswith("TRACE_")]:
        monkeypatch.delenv(name)
    yield
