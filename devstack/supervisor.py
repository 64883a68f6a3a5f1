"""The supervisor daemon: ``python -m devstack.supervisor --home HOME``.

``trace up`` writes ``HOME/run/services.json`` (the :class:`ServiceSpec` list, cwd, urls) and starts
this module, which detaches (fork + own session) and then runs each service as a child in its own
session with its output in ``HOME/logs/NAME.log``. A child that exits is started again after a
backoff (0.5 s doubling to 30 s, back to 0.5 s once it has run 10 s). The supervisor keeps
``HOME/run/NAME.pid`` for each running child and ``HOME/run/supervisor.json``::

    {"pid": 123, "started_at": ..., "updated_at": ..., "stopping": false, "urls": {...},
     "services": {"follower": {"pid": 130, "state": "running", "restarts": 0,
                               "started_at": ..., "last_exit": null, "log": ".../follower.log"}}}

On SIGTERM or SIGINT it stops every child (SIGTERM to its group, SIGKILL after 10 s), removes their
pid files and its own, and exits.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from devstack.process import spawn, stop_pid
from devstack.runfiles import StackPaths, live_pid, read_json, write_json, write_pid
from devstack.services import ServiceSpec
from tracekit.errors import StackError

BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 10.0
STOP_TIMEOUT = 10.0
TICK = 0.1


@dataclass
class Child:
    spec: ServiceSpec
    pid: int | None = None
    state: str = "starting"  # running | backoff | stopped
    restarts: int = 0
    started_at: float | None = None
    last_exit: int | None = None
    backoff: float = BACKOFF_MIN
    next_start: float = 0.0


def _log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} supervisor: {message}", flush=True)


class Supervisor:
    def __init__(self, paths: StackPaths, specs: list[ServiceSpec], *, cwd: Path | None = None,
                 urls: dict[str, Any] | None = None) -> None:
        self.paths = paths
        self.cwd = cwd
        self.urls = urls or {}
        self.children = [Child(spec) for spec in specs]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = False
        self.started_at = time.time()

    def _start(self, child: Child) -> None:
        name = child.spec.name
        try:
            proc = spawn(child.spec.argv, self.paths.log(name), env={**os.environ, **child.spec.env},
                         cwd=self.cwd)
        except StackError as exc:
            _log(f"{name}: {exc}")
            self._exited(child, 127)
            return
        self.procs[name] = proc
        child.pid, child.state, child.started_at = proc.pid, "running", time.time()
        write_pid(self.paths.pid_file(name), proc.pid)
        _log(f"{name}: started pid {proc.pid}")

    def _exited(self, child: Child, code: int) -> None:
        self.paths.pid_file(child.spec.name).unlink(missing_ok=True)
        child.pid, child.last_exit, child.state = None, code, "backoff"
        child.restarts += 1
        child.next_start = time.monotonic() + child.backoff
        _log(f"{child.spec.name}: exited with code {code}; restart #{child.restarts} in {child.backoff:.1f}s")
        child.backoff = min(child.backoff * 2, BACKOFF_MAX)

    def tick(self) -> bool:
        """Reap exited children and start those whose backoff is over; True when state changed."""
        changed = False
        for child in self.children:
            if child.state == "running":
                code = self.procs[child.spec.name].poll()
                if code is not None:
                    self._exited(child, code)
                    changed = True
                elif child.started_at is not None and time.time() - child.started_at > STABLE_AFTER:
                    child.backoff = BACKOFF_MIN
            elif child.state in ("starting", "backoff") and time.monotonic() >= child.next_start:
                self._start(child)
                changed = True
        return changed

    def state(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "started_at": self.started_at,
            "updated_at": time.time(),
            "stopping": self.stopping,
            "urls": self.urls,
            "services": {
                c.spec.name: {"pid": c.pid, "state": c.state, "restarts": c.restarts,
                              "started_at": c.started_at, "last_exit": c.last_exit,
                              "log": str(self.paths.log(c.spec.name))}
                for c in self.children
            },
        }

    def write_state(self) -> None:
        write_json(self.paths.supervisor_file, self.state())

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        _log(f"pid {os.getpid()} supervising {[c.spec.name for c in self.children]}")
        try:
            self.tick()
            self.write_state()
            while not self.stopping:
                time.sleep(TICK)
                if self.tick():
                    self.write_state()
        finally:  # also on an unexpected error: never leave children behind
            self.shutdown()
        return 0

    def shutdown(self) -> None:
        self.stopping = True
        self.write_state()
        running = {c.spec.name: c.pid for c in self.children if c.state == "running" and c.pid is not None}
        for pid in running.values():  # all at once, then wait for each
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for name, pid in running.items():
            stop_pid(pid, timeout=max(0.1, deadline - time.monotonic()))
            self.procs[name].poll()
            _log(f"{name}: stopped pid {pid}")
        for child in self.children:
            self.paths.pid_file(child.spec.name).unlink(missing_ok=True)
            child.pid, child.state = None, "stopped"
        self.write_state()
        self.paths.pid_file("supervisor").unlink(missing_ok=True)
        _log("stopped")


def load(paths: StackPaths) -> Supervisor:
    config = read_json(paths.services_file)
    if config is None:
        raise StackError(f"supervisor: no service list at {paths.services_file}")
    specs = [ServiceSpec.from_json(item) for item in config.get("services", [])]
    cwd = Path(config["cwd"]) if config.get("cwd") else None
    return Supervisor(paths, specs, cwd=cwd, urls=config.get("urls") or {})


def _daemonize() -> None:
    """Fork so that the starter can exit (and reap us); the grandchild leads a new session."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.supervisor")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--foreground", action="store_true", help="do not detach")
    args = parser.parse_args(argv)
    paths = StackPaths.at(args.home)
    try:
        supervisor = load(paths)
    except (StackError, KeyError, TypeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.foreground:
        _daemonize()
    pid_file = paths.pid_file("supervisor")
    other = live_pid(pid_file)
    if other is not None and other != os.getpid():
        print(f"error: a supervisor already runs for {paths.home} (pid {other})", file=sys.stderr)
        return 1
    write_pid(pid_file, os.getpid())
    supervisor.started_at = time.time()
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
