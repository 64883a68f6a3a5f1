"""The supervisor daemon as ``up`` and ``down`` see it: start it, wait for its services, stop it.

``up`` calls a supervised service healthy once it has been running for :data:`STABLE_FOR` seconds
without a restart (and its ``ready_url`` answers, when it has one); a service that exits
:data:`MAX_RESTARTS` times while ``up`` waits fails ``up`` with its log's last line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from devstack.process import (
    ensure_port_free,
    log_suffix,
    port_is_open,
    spawn,
    stop_pid,
    wait_until,
)
from devstack.runfiles import StackPaths, live_pid, mask_url, read_json, write_json
from devstack.services import ServiceSpec
from devstack.supervisor import STOP_TIMEOUT
from tracekit.config import Settings
from tracekit.errors import StackError


@dataclass
class UpReport:
    """What ``trace up`` did: services started, reused (already running) and external."""

    started: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)
    seconds: float = 0.0


EMBEDDED = ("postgres", "tansu", "anvil", "seaweedfs")  # process names of the embedded services
STABLE_FOR = 2.0
MAX_RESTARTS = 3


def public_urls(settings: Settings) -> dict[str, str | None]:
    return {
        "postgres": mask_url(settings.resolved_database_url),
        "kafka": settings.resolved_kafka_bootstrap,
        "rpc": mask_url(settings.resolved_rpc_url),
        "ws": settings.resolved_ws_url,
        "objects": settings.resolved_object_store,
        "s3": settings.resolved_s3_endpoint,
    }


def supervisor_command(home: Path) -> list[str]:
    return [sys.executable, "-m", "devstack.supervisor", "--home", str(home)]


def probe_ready(url: str, timeout: float = 1.0) -> bool:
    """``tcp://host:port`` accepts a connection, or an ``http(s)://`` URL answers below 500."""
    parts = urlsplit(url)
    if parts.scheme == "tcp":
        return parts.hostname is not None and parts.port is not None and port_is_open(
            parts.hostname, parts.port, timeout)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            return int(response.status) < 500
    except OSError:
        return False


def ensure_supervisor(settings: Settings, paths: StackPaths, specs: Sequence[ServiceSpec], *,
                      report: UpReport, timeout: float, say: Callable[[str], None]) -> None:
    """Start the supervisor unless one runs with the same services; wait until they are stable."""
    config: dict[str, Any] = json.loads(json.dumps(
        {"services": [spec.to_json() for spec in specs], "urls": public_urls(settings)}))
    pid = live_pid(paths.pid_file("supervisor"))
    if pid is not None:
        current = read_json(paths.services_file) or {}
        if {key: current.get(key) for key in config} == config:
            report.reused.append("supervisor")
            wait_stable(paths, specs, pid, timeout)
            return
        say("the service list changed: restarting the supervisor")
        stop_supervisor(paths)
    for spec in specs:
        for port in spec.ports:
            ensure_port_free(spec.name, settings.host, port)
    write_json(paths.services_file, {**config, "cwd": os.getcwd()}, private=True)
    paths.supervisor_file.unlink(missing_ok=True)
    log = paths.log("supervisor")
    starter = spawn(supervisor_command(paths.home), log, cwd=Path.cwd())
    try:
        code = starter.wait(timeout=15)
    except subprocess.TimeoutExpired as exc:
        stop_pid(starter.pid)
        raise StackError(f"supervisor did not detach{log_suffix(log)}") from exc
    if code != 0:
        raise StackError(f"supervisor failed to start (exit code {code}){log_suffix(log)}")

    def started() -> bool:
        state = read_json(paths.supervisor_file)
        return state is not None and state.get("pid") == live_pid(paths.pid_file("supervisor"))

    wait_until(started, timeout=15, what="supervisor", log_path=log)
    pid = live_pid(paths.pid_file("supervisor"))
    if pid is None:
        raise StackError(f"supervisor exited right after start{log_suffix(log)}")
    report.started.append("supervisor")
    wait_stable(paths, specs, pid, timeout)


def wait_stable(paths: StackPaths, specs: Sequence[ServiceSpec], pid: int, timeout: float) -> None:
    """Wait until every service runs, unrestarted, for STABLE_FOR s; fail on a crash loop."""
    deadline = time.monotonic() + timeout
    baseline: dict[str, int] | None = None
    pending = [spec.name for spec in specs]
    while True:
        if live_pid(paths.pid_file("supervisor")) != pid:
            raise StackError(f"supervisor (pid {pid}) exited{log_suffix(paths.log('supervisor'))}")
        state = read_json(paths.supervisor_file) or {}
        reporting = state.get("pid") == pid  # the supervisor has written its state
        services: dict[str, Any] = state.get("services", {}) if reporting else {}
        if reporting:
            if baseline is None:
                baseline = {name: int(entry["restarts"]) for name, entry in services.items()}
            pending = []
            for spec in specs:
                entry = services.get(spec.name)
                if entry is None:
                    pending.append(spec.name)
                    continue
                if int(entry["restarts"]) - baseline.get(spec.name, 0) >= MAX_RESTARTS:
                    raise StackError(
                        f"{spec.name} keeps exiting (exit code {entry['last_exit']}, "
                        f"{entry['restarts']} restarts){log_suffix(paths.log(spec.name))}")
                stable = (entry["state"] == "running" and entry["started_at"] is not None
                          and time.time() - float(entry["started_at"]) >= STABLE_FOR)
                if not stable or (spec.ready_url is not None and not probe_ready(spec.ready_url)):
                    pending.append(spec.name)
            if not pending:
                return
        if time.monotonic() > deadline:
            name = pending[0] if pending else "supervisor"
            raise StackError(f"{name} not healthy after {timeout:.0f}s{log_suffix(paths.log(name))}")
        time.sleep(0.1)


def stop_supervisor(paths: StackPaths) -> list[str]:
    """Stop the supervisor (it stops its children), then any child it left behind; returns names."""
    stopped = []
    pid = live_pid(paths.pid_file("supervisor"))
    if pid is not None:
        stop_pid(pid, timeout=STOP_TIMEOUT + 10)
        stopped.append("supervisor")
    paths.pid_file("supervisor").unlink(missing_ok=True)
    config = read_json(paths.services_file) or {}
    names = {str(item.get("name")) for item in config.get("services", []) if isinstance(item, dict)}
    if paths.run_dir.is_dir():
        names |= {p.stem for p in paths.run_dir.glob("*.pid")} - {*EMBEDDED, "supervisor"}
    for name in sorted(names):
        child = live_pid(paths.pid_file(name))  # only when the supervisor died without stopping it
        if child is not None:
            stop_pid(child)
            stopped.append(name)
        paths.pid_file(name).unlink(missing_ok=True)
    paths.supervisor_file.unlink(missing_ok=True)
    return stopped
