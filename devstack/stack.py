"""``trace up`` and ``trace down``: the whole local stack under one directory (``Settings.home``).

``up`` starts, in order and each only when not given from outside: Postgres (then migrations),
tansu, anvil, SeaweedFS (S3, with its buckets); prepares the object store (creates the directory,
or checks an ``s3://`` store); pre-creates the topics; then Trace's own services under the
supervisor daemon. A malformed object-store URL stops it before anything starts. It returns once
everything is healthy, and is idempotent: a process we started (pid file + start time) that is
healthy is left alone. ``down`` stops only what pid files name.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psycopg

from devstack import supervision
from devstack.anvil import AnvilSpec, rpc_chain_id, rpc_request, start_anvil
from devstack.objects import ensure_object_dir
from devstack.postgres import (
    PostgresSpec,
    data_dir_for,
    postgres_healthy,
    postmaster_pid,
    shared_data_dir,
    start_postgres,
    stop_postgres,
)
from devstack.process import stop_pid, wait_until
from devstack.runfiles import StackPaths, live_pid, mask_url, save_settings, write_pid
from devstack.seaweedfs import (
    SeaweedfsSpec,
    ensure_buckets,
    remove_stale_sockets,
    s3_healthy,
    start_seaweedfs,
)
from devstack.services import ServiceSpec, supervised_services
from devstack.supervision import EMBEDDED, UpReport
from devstack.tansu import TansuSpec, ensure_topics, kafka_healthy, start_tansu
from tracekit.config import Settings
from tracekit.db import migrate
from tracekit.errors import ChainMismatch, ConfigError, RpcUnavailable, StackError
from tracekit.names import blocks_topic, dead_letter_topic
from tracekit.objects import S3Config, local_object_dir, parse_store_url
from tracekit.objects_open import open_object_store

PURGED = ("run", "data", "logs", "objects", "faust")  # what `down --purge` deletes under home
PURGED_FILES = ("secrets.json", ".secrets.json.lock")  # generated credentials (S3, API tokens)
STOPPED_BY_PID = ("anvil", "tansu", "seaweedfs")  # embedded processes `down` stops by pid file


def stack_topics(settings: Settings) -> dict[str, int]:
    """Topics created before any service starts, with their partition counts."""
    topic = blocks_topic(settings.chain_id)
    return {topic: 1, dead_letter_topic(topic): 1}


def _ensure(name: str, paths: StackPaths, healthy: Callable[[], bool], start: Callable[[], int],
            report: UpReport) -> None:
    """Reuse our running, healthy ``name``, else start it and record its pid."""
    pid = live_pid(paths.pid_file(name))
    if pid is not None:
        try:
            wait_until(healthy, timeout=10.0, what=name)
        except StackError as exc:
            raise StackError(f"{name}: our process (pid {pid}) runs but is not healthy; see "
                             f"{paths.log(name)} or run `trace down`") from exc
        report.reused.append(name)
        return
    write_pid(paths.pid_file(name), start())
    report.started.append(name)


def _postgres(settings: Settings, paths: StackPaths, report: UpReport) -> None:
    url = settings.resolved_database_url
    if settings.database_url is not None:
        report.external.append("postgres")
    else:
        spec = PostgresSpec(
            data_dir_for(paths.pg_data), paths.log("postgres"), settings.host, settings.pg_port
        )
        running = postmaster_pid(spec.data_dir)
        if running is not None and live_pid(paths.pid_file("postgres")) is None:
            write_pid(paths.pid_file("postgres"), running)  # ours (our data dir), pid file lost
        _ensure("postgres", paths, lambda: postgres_healthy(url), lambda: start_postgres(spec), report)
    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = (str(exc).strip().splitlines() or ["?"])[0]
        raise StackError(f"postgres: cannot connect to {mask_url(url)}: {reason}") from exc
    migrate(url)


def _kafka(settings: Settings, paths: StackPaths, report: UpReport) -> None:
    bootstrap = settings.resolved_kafka_bootstrap
    if settings.kafka_bootstrap is not None:
        report.external.append("kafka")
        if not kafka_healthy(bootstrap, timeout=5.0):
            raise StackError(f"kafka: broker at {bootstrap} is unreachable")
        return
    spec = TansuSpec(settings.host, settings.kafka_port)
    _ensure("tansu", paths, lambda: kafka_healthy(bootstrap),
            lambda: start_tansu(spec, paths.log("tansu")).pid, report)


def _rpc(settings: Settings, paths: StackPaths, report: UpReport) -> None:
    url = settings.resolved_rpc_url
    if settings.rpc_url is not None:
        report.external.append("rpc")
    else:
        spec = AnvilSpec(settings.host, settings.anvil_port, settings.chain_id, settings.block_time,
                         state_path=paths.anvil_state(settings.chain_id))
        _ensure("anvil", paths, lambda: rpc_chain_id(url) is not None,
                lambda: start_anvil(spec, paths.log("anvil")).pid, report)
    served = rpc_chain_id(url, timeout=5.0)
    if served is None:
        raise StackError(f"rpc: JSON-RPC endpoint {mask_url(url)} is unreachable (eth_chainId failed)")
    if served != settings.chain_id:
        raise ChainMismatch(f"chain id mismatch: node at {mask_url(url)} serves {served}, "
                            f"configured {settings.chain_id} (set TRACE_CHAIN_ID)")


def seaweedfs_spec(settings: Settings, paths: StackPaths, config: S3Config) -> SeaweedfsSpec:
    return SeaweedfsSpec(
        paths.seaweedfs_dir,
        access_key_id=config.access_key_id.get_secret_value() if config.access_key_id else "",
        secret_access_key=config.secret_access_key.get_secret_value() if config.secret_access_key else "",
        host=settings.host, s3_port=settings.s3_port, master_port=settings.seaweedfs_master_port,
        volume_port=settings.seaweedfs_volume_port, filer_port=settings.seaweedfs_filer_port,
        admin_port=settings.seaweedfs_admin_port, region=settings.s3_region,
    )


def _s3(settings: Settings, paths: StackPaths, report: UpReport) -> S3Config:
    """The embedded SeaweedFS with its buckets, unless ``TRACE_S3_ENDPOINT`` names another S3."""
    config = settings.s3_config()
    if settings.s3_endpoint is not None:
        report.external.append("s3")
        return config
    spec = seaweedfs_spec(settings, paths, config)
    _ensure("seaweedfs", paths, lambda: s3_healthy(config),
            lambda: start_seaweedfs(spec, paths.log("seaweedfs")).pid, report)
    ensure_buckets(config)
    return config


def _objects(settings: Settings, s3: S3Config) -> None:
    """Create the object-store directory, or check that an ``s3://`` store answers."""
    directory = local_object_dir(settings.resolved_object_store)
    if directory is not None:
        ensure_object_dir(directory)
    else:
        open_object_store(settings.resolved_object_store, s3).check()


def _check_continuity(settings: Settings) -> None:
    """Fail when the node lacks the oldest block of the follower's window: the follower could not
    find a common ancestor and would crash-loop (the embedded anvil lost its chain, say)."""
    url = settings.resolved_rpc_url
    try:
        with psycopg.connect(settings.resolved_database_url, connect_timeout=3, autocommit=True) as conn:
            row = conn.execute(
                "SELECT block_number, block_hash FROM state.follower_window WHERE chain_id = %s"
                " ORDER BY block_number LIMIT 1", (settings.chain_id,)).fetchone()
        if row is None:
            return
        block = rpc_request(url, "eth_getBlockByNumber", hex(int(row[0])), False)
    except (psycopg.Error, RpcUnavailable):
        return
    if not isinstance(block, dict) or block.get("hash") != row[1]:
        why = ("the embedded anvil lost its chain (killed without `trace down`?)" if settings.rpc_url is None
               else f"the node at {mask_url(url)} does not have it")
        raise StackError(f"rpc: block {row[0]} ({str(row[1])[:12]}...) that the follower emitted for chain "
                         f"{settings.chain_id} is not on the node: {why}; `trace down --purge` starts over")


@contextlib.contextmanager
def _exclusive(paths: StackPaths) -> Iterator[None]:
    """One ``up`` / ``down`` at a time per home: a second one waits, then finds the work done."""
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    with (paths.run_dir / "stack.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def up(settings: Settings, *, services: Sequence[ServiceSpec] | None = None,
       say: Callable[[str], None] = lambda message: None, timeout: float = 60.0) -> UpReport:
    """Start what is not running yet and wait until all is healthy; see the module docstring."""
    began = time.monotonic()
    paths = StackPaths.at(settings.home)
    settings = settings.model_copy(update={"home": paths.home})
    specs = list(services) if services is not None else supervised_services(settings)
    clash = sorted({s.name for s in specs} & {*EMBEDDED, "supervisor"})
    if clash:
        raise ConfigError(f"supervised service name {clash[0]!r} is reserved")
    parse_store_url(settings.resolved_object_store)  # a malformed URL: one line, nothing started
    paths.create()
    with _exclusive(paths):
        report = _up(settings, paths, specs, say=say, timeout=timeout)
    report.seconds = time.monotonic() - began
    return report


def _up(settings: Settings, paths: StackPaths, specs: Sequence[ServiceSpec], *,
        say: Callable[[str], None], timeout: float) -> UpReport:
    report = UpReport()
    _postgres(settings, paths, report)
    say("postgres ready")
    _kafka(settings, paths, report)
    say("kafka ready")
    _rpc(settings, paths, report)
    _check_continuity(settings)
    say("rpc ready")
    s3 = _s3(settings, paths, report)
    say("s3 ready")
    _objects(settings, s3)
    ensure_topics(settings.resolved_kafka_bootstrap, stack_topics(settings))
    save_settings(paths, settings)
    supervision.ensure_supervisor(settings, paths, specs, report=report, timeout=timeout, say=say)
    return report


def down(home: Path, *, purge: bool = False, say: Callable[[str], None] = lambda message: None) -> list[str]:
    """Stop every process of the stack in ``home`` that a pid file names; returns their names.

    ``purge`` then deletes what the stack keeps in ``home`` (:data:`PURGED`, :data:`PURGED_FILES`;
    ``home`` itself when that leaves it empty) so that the next ``up`` starts over.
    """
    paths = StackPaths.at(home)
    if not paths.home.is_dir():
        return []
    with _exclusive(paths):
        stopped = _down(paths, say)
    if purge:
        _purge(paths, say)
    return stopped


def _down(paths: StackPaths, say: Callable[[str], None]) -> list[str]:
    stopped = supervision.stop_supervisor(paths)
    for name in stopped:
        say(f"stopped {name}")
    for name in STOPPED_BY_PID:
        pid = live_pid(paths.pid_file(name))
        if pid is not None:
            stop_pid(pid, timeout=30.0)  # anvil writes its chain to disk on SIGTERM
            stopped.append(name)
            say(f"stopped {name}")
        paths.pid_file(name).unlink(missing_ok=True)
    remove_stale_sockets(paths.seaweedfs_dir)
    pg_data = data_dir_for(paths.pg_data)
    if live_pid(paths.pid_file("postgres")) is not None or postmaster_pid(pg_data) is not None:
        stop_postgres(pg_data)
        stopped.append("postgres")
        say("stopped postgres")
    paths.pid_file("postgres").unlink(missing_ok=True)
    if paths.run_dir.is_dir():
        for pid_file in paths.run_dir.glob("*.pid"):
            live_pid(pid_file)  # removes stale ones
    return stopped


def _purge(paths: StackPaths, say: Callable[[str], None]) -> None:
    if paths.run_dir.is_dir() and any(live_pid(pid_file) for pid_file in paths.run_dir.glob("*.pid")):
        raise StackError(f"not purging {paths.home}: a process of the stack still runs")
    for sub in PURGED:  # only what the stack creates, never the whole directory blindly
        shutil.rmtree(paths.home / sub, ignore_errors=True)
    for name in PURGED_FILES:
        (paths.home / name).unlink(missing_ok=True)
    shutil.rmtree(shared_data_dir(paths.pg_data).parent, ignore_errors=True)  # if Postgres lived there
    with contextlib.suppress(OSError):
        paths.home.rmdir()
    say(f"deleted the data, logs and state in {paths.home}")
