"""Postgres runs as uid 65534 when we are root: its binaries and data must be reachable by it
wherever the clone and the home are (a 0700 parent such as /root included)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from devstack.postgres import data_dir_for, pg_bin, shared_data_dir, traversable

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the unprivileged uid is used only as root")


@root_only
def test_home_under_a_closed_directory_keeps_postgres_data_elsewhere(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    closed.chmod(0o700)
    home_data = closed / "home" / "data" / "postgres"
    moved = data_dir_for(home_data)
    assert moved == shared_data_dir(home_data) != home_data
    assert traversable(moved.parent, 65534, 65534)
    assert data_dir_for(home_data) == moved  # stable per home


@root_only
def test_open_home_keeps_postgres_data_in_the_home() -> None:
    base = Path(tempfile.mkdtemp(dir="/var/tmp"))
    try:
        base.chmod(0o755)
        home_data = base / "home" / "data" / "postgres"
        assert data_dir_for(home_data) == home_data
    finally:
        shutil.rmtree(base)


@root_only
def test_postgres_programs_are_reachable_by_the_unprivileged_uid() -> None:
    initdb = pg_bin("initdb")
    result = subprocess.run(
        [str(initdb), "--version"], capture_output=True, text=True, user=65534, group=65534,
        extra_groups=[], check=False,
    )
    assert result.returncode == 0 and "PostgreSQL" in result.stdout, (initdb, result.stderr)


def test_non_root_uses_paths_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("devstack.postgres.run_as_uid", lambda: None)
    home_data = tmp_path / "x" / "data" / "postgres"
    assert data_dir_for(home_data) == home_data
