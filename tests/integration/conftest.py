"""The real local stack for integration tests, started once per session on free ports.

``pg_url`` (embedded Postgres, migrated; superuser ``postgres``, so tests may CREATE DATABASE),
``kafka_bootstrap`` (tansu), ``anvil`` (rpc_url, ws_url, chain_id; 0.4 s blocks), ``object_dir``,
and ``seaweedfs`` / ``s3_config`` (SeaweedFS with generated credentials and the buckets
``datasets``, ``results``, ``scratch``). ``object_store`` gives each test module a fresh store twice
over: on SeaweedFS (a prefix of ``datasets``) and in a directory, so a module using it runs on both.
All live under one temporary directory (mode 0755: Postgres runs as uid 65534 when we are root),
removed at the end. A fixture that cannot start its service fails the test naming the service; it
never skips. Every test in this directory is marked ``integration``.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from devstack.anvil import AnvilSpec, start_anvil
from devstack.objects import ensure_object_dir
from devstack.postgres import PostgresSpec, start_postgres, stop_postgres
from devstack.process import free_port, stop_pid
from devstack.seaweedfs import (
    SeaweedfsSpec,
    ensure_buckets,
    free_seaweedfs_ports,
    remove_stale_sockets,
    start_seaweedfs,
)
from devstack.tansu import TansuSpec, start_tansu
from tests.integration.object_stores import TestStore, new_store
from tracekit.db import migrate
from tracekit.errors import TraceError
from tracekit.objects import S3Config

ANVIL_CHAIN_ID = 10143


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


def _cannot_start(service: str, exc: BaseException) -> NoReturn:
    pytest.fail(f"{service}: cannot start for the integration tests: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def stack_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="trace-it-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_url(stack_root: Path) -> Iterator[str]:
    spec = PostgresSpec(stack_root / "data" / "postgres", stack_root / "logs" / "postgres.log",
                        port=free_port())
    try:
        (stack_root / "data").mkdir(mode=0o755, exist_ok=True)
        start_postgres(spec)
        migrate(spec.url)
    except (TraceError, OSError) as exc:
        with contextlib.suppress(TraceError):
            stop_postgres(spec.data_dir)
        _cannot_start("postgres", exc)
    try:
        yield spec.url
    finally:
        stop_postgres(spec.data_dir)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    stop_pid(proc.pid)
    proc.wait(timeout=5)


@pytest.fixture(scope="session")
def kafka_bootstrap(stack_root: Path) -> Iterator[str]:
    spec = TansuSpec(port=free_port())
    try:
        proc = start_tansu(spec, stack_root / "logs" / "tansu.log")
    except (TraceError, OSError) as exc:
        _cannot_start("kafka (tansu)", exc)
    try:
        yield spec.bootstrap
    finally:
        _stop(proc)


@contextlib.contextmanager
def _running_anvil(block_time: float, log: Path) -> Iterator[AnvilSpec]:
    spec = AnvilSpec(port=free_port(), chain_id=ANVIL_CHAIN_ID, block_time=block_time)
    try:
        proc = start_anvil(spec, log)
    except (TraceError, OSError) as exc:
        _cannot_start("anvil", exc)
    try:
        yield spec
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def anvil(stack_root: Path) -> Iterator[AnvilSpec]:
    """The session's chain: ``.rpc_url``, ``.ws_url``, ``.chain_id`` (10143), 0.4 s blocks."""
    with _running_anvil(0.4, stack_root / "logs" / "anvil.log") as spec:
        yield spec


@pytest.fixture(scope="module")
def on_demand_anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An anvil of the module's own (chain 10143) that mines only on demand: its history is
    exactly what the module mines. Yields the RPC URL."""
    with _running_anvil(0, tmp_path_factory.mktemp("anvil") / "anvil.log") as spec:
        yield spec.rpc_url


@pytest.fixture(scope="session")
def object_dir(stack_root: Path) -> Path:
    try:
        return ensure_object_dir(stack_root / "objects")
    except (TraceError, OSError) as exc:
        _cannot_start("objects", exc)


@pytest.fixture(scope="session")
def seaweedfs(stack_root: Path) -> Iterator[SeaweedfsSpec]:
    """The session's S3 server (free ports for all ten of its ports), buckets created."""
    try:
        spec = SeaweedfsSpec(stack_root / "data" / "seaweedfs",
                             access_key_id="IT" + secrets.token_hex(8).upper(),
                             secret_access_key=secrets.token_urlsafe(30), **free_seaweedfs_ports())
        proc = start_seaweedfs(spec, stack_root / "logs" / "seaweedfs.log")
    except (TraceError, OSError) as exc:
        _cannot_start("s3 (seaweedfs)", exc)
    try:
        try:
            ensure_buckets(spec.s3_config())
        except (TraceError, OSError) as exc:
            _cannot_start("s3 (seaweedfs buckets)", exc)
        yield spec
    finally:
        _stop(proc)
        remove_stale_sockets(spec.root)


@pytest.fixture(scope="session")
def s3_config(seaweedfs: SeaweedfsSpec) -> S3Config:
    """Endpoint, region and credentials of the session's S3 server."""
    return seaweedfs.s3_config()


@pytest.fixture(scope="module", params=["s3", "dir"])
def object_store(request: pytest.FixtureRequest) -> TestStore:
    """An empty store for the module: ``s3://datasets/it-...`` on the session's SeaweedFS, then a
    fresh directory (``file://``): every test using it runs on both."""
    name = f"it-{uuid.uuid4().hex[:10]}"
    if request.param == "s3":
        return new_store("s3", name, s3=request.getfixturevalue("s3_config"))
    return new_store("dir", name, directory=request.getfixturevalue("object_dir"))
