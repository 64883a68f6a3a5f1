"""The local stack's directory (``Settings.home``): layout, pid files and small JSON state files.

Everything the stack owns lives under one directory::

    HOME/data/postgres   Postgres data dir (owned by uid 65534 when we run as root)
    HOME/data/anvil      the embedded chain, per chain id (written when anvil stops)
    HOME/data/seaweedfs  the embedded S3 server (SeaweedFS): its objects, identity file and logs
    HOME/objects         a directory object store, if TRACE_OBJECT_STORE names one (default: s3://datasets)
    HOME/logs/NAME.log   one log per process
    HOME/run/NAME.pid    "PID START_TICKS" of each process we started
    HOME/run/*.json      stack.json (settings of the last `up`), services.json, supervisor.json

A pid file records the process's start time too, so a pid reused by an unrelated process after a
crash or reboot is never taken for ours: ``down`` only ever signals processes it started.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

from devstack.process import pid_alive, process_start_ticks
from tracekit.config import Settings


@dataclass(frozen=True)
class StackPaths:
    home: Path

    @classmethod
    def at(cls, home: Path) -> StackPaths:
        return cls(home.expanduser().resolve())

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def pg_data(self) -> Path:
        return self.home / "data" / "postgres"

    def anvil_state(self, chain_id: int) -> Path:
        return self.home / "data" / "anvil" / f"{chain_id}.json"

    @property
    def seaweedfs_dir(self) -> Path:
        return self.home / "data" / "seaweedfs"

    @property
    def objects(self) -> Path:
        return self.home / "objects"

    @property
    def stack_file(self) -> Path:
        return self.run_dir / "stack.json"

    @property
    def services_file(self) -> Path:
        return self.run_dir / "services.json"

    @property
    def supervisor_file(self) -> Path:
        return self.run_dir / "supervisor.json"

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def create(self) -> None:
        """Create home, run and log dirs; dirs created here get mode 0755 (traversable by others)."""
        for path in (self.run_dir, self.log_dir, self.pg_data.parent):
            make_dirs(path, mode=0o755)


def make_dirs(path: Path, *, mode: int = 0o755) -> list[Path]:
    """``mkdir -p`` that sets ``mode`` (despite the umask) on each directory it creates."""
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir()
            directory.chmod(mode)
    return list(reversed(missing))


# -- pid files --------------------------------------------------------------------------------------


def write_pid(path: Path, pid: int) -> None:
    ticks = process_start_ticks(pid)
    write_text_atomic(path, f"{pid} {ticks if ticks is not None else ''}".strip() + "\n")


def read_pid(path: Path) -> tuple[int, int | None] | None:
    """``(pid, start_ticks)`` from a pid file, None when missing or unreadable."""
    try:
        fields = path.read_text().split()
        return int(fields[0]), (int(fields[1]) if len(fields) > 1 else None)
    except (OSError, ValueError, IndexError):
        return None


def is_same_process(pid: int, start_ticks: int | None) -> bool:
    """True when ``pid`` runs and is the very process that was recorded (not a reused pid)."""
    if not pid_alive(pid):
        return False
    return start_ticks is None or process_start_ticks(pid) in (start_ticks, None)


def live_pid(path: Path) -> int | None:
    """The pid recorded in ``path`` if that process still runs; a stale pid file is removed."""
    recorded = read_pid(path)
    if recorded is None:
        path.unlink(missing_ok=True)  # unreadable: nothing we can trust
        return None
    if is_same_process(*recorded):
        return recorded[0]
    path.unlink(missing_ok=True)
    return None


# -- JSON state -------------------------------------------------------------------------------------


def write_text_atomic(path: Path, text: str, *, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, mode)
    tmp.replace(path)


def write_json(path: Path, data: Any, *, private: bool = False) -> None:
    """Write ``data`` atomically (readers never see half a file); ``private`` = mode 0600."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n",
                      mode=0o600 if private else 0o644)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# -- the settings of the last `up` ------------------------------------------------------------------


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo = f"{parts.username or ''}:***"
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))


def save_settings(paths: StackPaths, settings: Settings) -> None:
    """Remember the settings ``up`` used (mode 0600: it holds secrets given to ``up``, such as a
    database password or S3 credentials, so that ``status`` uses the same)."""
    data = settings.model_dump(mode="json")
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):  # model_dump masks them as "**********"
            data[name] = value.get_secret_value()
    write_json(paths.stack_file, data, private=True)


def effective_settings(settings: Settings) -> Settings:
    """``settings`` on top of those of the last ``up`` in the same home: fields set explicitly (by
    option or ``TRACE_*``) win, the others come from that ``up``, so ``status`` sees its ports."""
    paths = StackPaths.at(settings.home)
    saved = read_json(paths.stack_file)
    if saved is None:
        return settings.model_copy(update={"home": paths.home})
    merged = {name: saved[name] for name in type(settings).model_fields if name in saved}
    merged.update({name: getattr(settings, name) for name in settings.model_fields_set})
    merged["home"] = paths.home
    return type(settings).model_validate(merged)
