"""The supervisor's restart loop and shutdown, on tiny real child processes."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from devstack import supervisor as sup
from devstack.process import pid_alive
from devstack.runfiles import StackPaths, read_json, read_pid
from devstack.services import ServiceSpec


def _run_until(s: sup.Supervisor, done: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if s.tick():
            s.write_state()
        if callable(done) and done():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def test_a_crashing_child_is_restarted_with_backoff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sup, "BACKOFF_MIN", 0.05)
    paths = StackPaths.at(tmp_path)
    paths.create()
    crash = ServiceSpec("crash", (sys.executable, "-c", "print('bye'); raise SystemExit(3)"))
    s = sup.Supervisor(paths, [crash])
    s.children[0].backoff = sup.BACKOFF_MIN
    _run_until(s, lambda: s.children[0].restarts >= 3)
    child = s.children[0]
    assert child.last_exit == 3
    assert child.backoff == pytest.approx(0.05 * 2 ** child.restarts)  # doubles each time
    state = read_json(paths.supervisor_file) or {}
    assert state["services"]["crash"]["restarts"] >= 3
    assert "bye" in paths.log("crash").read_text()
    s.shutdown()


def test_shutdown_stops_children_and_removes_pid_files(tmp_path: Path) -> None:
    paths = StackPaths.at(tmp_path)
    paths.create()
    specs = [ServiceSpec(name, (sys.executable, "-c", "import time; time.sleep(60)"), {"X_TEST": name})
             for name in ("a", "b")]
    s = sup.Supervisor(paths, specs, urls={"rpc": "http://x"})
    _run_until(s, lambda: all(c.state == "running" for c in s.children))
    pids = [(read_pid(paths.pid_file(c.spec.name)) or (0, None))[0] for c in s.children]
    assert pids == [c.pid for c in s.children] and all(pid_alive(p) for p in pids)
    s.write_state()
    state = read_json(paths.supervisor_file) or {}
    assert state["urls"] == {"rpc": "http://x"} and state["services"]["a"]["state"] == "running"
    began = time.monotonic()
    s.shutdown()
    assert time.monotonic() - began < 5
    assert not any(pid_alive(p) for p in pids)
    assert list(paths.run_dir.glob("*.pid")) == []
    final = read_json(paths.supervisor_file) or {}
    assert {e["state"] for e in final["services"].values()} == {"stopped"}


def test_a_child_that_cannot_start_backs_off(tmp_path: Path) -> None:
    paths = StackPaths.at(tmp_path)
    paths.create()
    s = sup.Supervisor(paths, [ServiceSpec("missing", (str(tmp_path / "no-such-program"),))])
    s.tick()
    child = s.children[0]
    assert (child.state, child.last_exit, child.restarts) == ("backoff", 127, 1)


def test_main_without_a_service_list_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sup.main(["--home", str(tmp_path), "--foreground"]) == 2
    assert capsys.readouterr().err.startswith("error: supervisor: no service list at ")
