"""Pid files, state files and the settings of the last `up` (no processes of the stack needed)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from devstack.runfiles import (
    StackPaths,
    effective_settings,
    live_pid,
    make_dirs,
    mask_url,
    read_json,
    read_pid,
    save_settings,
    write_json,
    write_pid,
)
from tracekit.config import Settings


def test_pid_file_of_a_running_process(tmp_path: Path) -> None:
    path = tmp_path / "me.pid"
    write_pid(path, os.getpid())
    pid, ticks = read_pid(path) or (0, None)
    assert pid == os.getpid() and ticks is not None
    assert live_pid(path) == os.getpid()
    assert path.exists()


def test_stale_pid_file_is_removed(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    path = tmp_path / "gone.pid"
    path.write_text(f"{int(proc.stdout)} 1\n")
    assert live_pid(path) is None
    assert not path.exists()


def test_reused_pid_is_not_ours(tmp_path: Path) -> None:
    """A live pid whose start time differs from the recorded one: another process got that pid."""
    path = tmp_path / "reused.pid"
    write_pid(path, os.getpid())
    pid, ticks = read_pid(path) or (0, 0)
    path.write_text(f"{pid} {(ticks or 0) + 12345}\n")
    assert live_pid(path) is None
    assert not path.exists()


@pytest.mark.parametrize("content", ["", "not-a-pid\n", " \n"])
def test_garbage_pid_file_is_removed(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.pid"
    path.write_text(content)
    assert read_pid(path) is None
    assert live_pid(path) is None
    assert not path.exists()


def test_missing_pid_file(tmp_path: Path) -> None:
    assert live_pid(tmp_path / "none.pid") is None


def test_make_dirs_sets_mode_despite_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        created = make_dirs(tmp_path / "a" / "b" / "c", mode=0o755)
    finally:
        os.umask(old)
    assert created == [tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o755 for p in created)
    assert make_dirs(tmp_path / "a" / "b") == []


def test_json_state_is_atomic_and_private_when_asked(tmp_path: Path) -> None:
    write_json(tmp_path / "run" / "s.json", {"b": 1, "a": [1, 2]}, private=True)
    assert read_json(tmp_path / "run" / "s.json") == {"a": [1, 2], "b": 1}
    assert stat.S_IMODE((tmp_path / "run" / "s.json").stat().st_mode) == 0o600
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["s.json"]
    (tmp_path / "broken.json").write_text("{")
    assert read_json(tmp_path / "broken.json") is None
    assert read_json(tmp_path / "missing.json") is None


def test_paths_layout(tmp_path: Path) -> None:
    paths = StackPaths.at(tmp_path / "home")
    assert paths.pid_file("anvil") == tmp_path / "home" / "run" / "anvil.pid"
    assert paths.log("sink") == tmp_path / "home" / "logs" / "sink.log"
    assert paths.pg_data == tmp_path / "home" / "data" / "postgres"
    paths.create()
    assert paths.run_dir.is_dir() and paths.log_dir.is_dir() and paths.pg_data.parent.is_dir()


@pytest.mark.parametrize(("url", "masked"), [
    ("postgresql://postgres@127.0.0.1:5432/postgres", "postgresql://postgres@127.0.0.1:5432/postgres"),
    ("postgresql://u:s3cret@db:5432/x?sslmode=require", "postgresql://u:***@db:5432/x?sslmode=require"),
    ("https://user:key@rpc.example/v1", "https://user:***@rpc.example/v1"),
    ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
])
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_status_sees_the_settings_of_the_last_up(tmp_path: Path) -> None:
    home = tmp_path / "home"
    used = Settings(home=home, pg_port=6001, chain_id=31337, database_url=SecretStr("postgresql://u:p@h/d"))
    save_settings(StackPaths.at(home), used)
    assert stat.S_IMODE((home / "run" / "stack.json").stat().st_mode) == 0o600
    later = effective_settings(Settings(home=home))
    assert (later.pg_port, later.chain_id) == (6001, 31337)
    assert later.resolved_database_url == "postgresql://u:p@h/d"
    explicit = effective_settings(Settings(home=home, chain_id=10143))
    assert (explicit.pg_port, explicit.chain_id) == (6001, 10143)


def test_without_a_previous_up_settings_are_unchanged(tmp_path: Path) -> None:
    settings = effective_settings(Settings(home=tmp_path / "fresh", kafka_port=1234))
    assert settings.kafka_port == 1234 and settings.home == (tmp_path / "fresh").resolve()
