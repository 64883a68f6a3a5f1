"""Process and directory helpers of the local stack."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from devstack.objects import ensure_object_dir, objects_healthy
from devstack.postgres import check_traversable
from devstack.process import ensure_port_free, free_port, pid_alive, stop_pid
from devstack.supervision import probe_ready
from tracekit.errors import StackError
from tracekit.objects import local_object_dir


def test_a_zombie_is_not_alive() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{proc.pid}/stat").read_text().split(") ")[1][0] != "Z":
        time.sleep(0.02)
    assert not pid_alive(proc.pid)  # exited, not reaped yet
    proc.wait()


def test_port_in_use_names_service_and_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(StackError, match=rf"^kafka: port 127.0.0.1:{port} is already in use"):
            ensure_port_free("kafka", "127.0.0.1", port)
    ensure_port_free("kafka", "127.0.0.1", port)  # free again


def test_stop_pid_of_a_process_that_leads_no_group() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # in our group
    stop_pid(proc.pid, timeout=5)  # signals the process only (not pytest's group), and reaps it
    assert not pid_alive(proc.pid)
    proc.wait(timeout=5)


def test_parent_not_traversable_is_one_clear_line() -> None:
    root = Path(tempfile.mkdtemp(prefix="trace-unit-"))  # pytest's tmp_path is under a 0700 dir
    try:
        root.chmod(0o755)
        locked = root / "locked"
        locked.mkdir(mode=0o700)
        locked.chmod(0o700)
        with pytest.raises(StackError, match=rf"^postgres: {locked} \(mode 0700\) cannot be traversed"):
            check_traversable(locked / "home" / "data" / "postgres", 65534, 65534)
        (root / "open").mkdir(mode=0o755)
        check_traversable(root / "open" / "data", 65534, 65534)
    finally:
        shutil.rmtree(root)


@pytest.mark.parametrize(("store", "expected"), [
    ("/data/objects", Path("/data/objects")),
    ("relative/objects", Path("relative/objects")),
    ("file:///data/objects", Path("/data/objects")),
    ("s3://bucket/prefix", None),
])
def test_local_object_dir(store: str, expected: Path | None) -> None:
    assert local_object_dir(store) == expected


def test_object_dir_health(tmp_path: Path) -> None:
    path = ensure_object_dir(tmp_path / "objects")
    assert objects_healthy(path) and list(path.iterdir()) == []
    assert not objects_healthy(tmp_path / "missing")


def test_probe_ready_tcp() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert probe_ready(f"tcp://127.0.0.1:{sock.getsockname()[1]}")
    assert not probe_ready(f"tcp://127.0.0.1:{free_port()}")
    assert not probe_ready(f"http://127.0.0.1:{free_port()}/metrics")
