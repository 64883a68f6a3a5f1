"""Status JSON assembly (pure) and the supervised entries read from the run directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

from devstack.runfiles import StackPaths, write_json, write_pid
from devstack.status import assemble_status, chain_entry, service_entry, supervised_entries

NO_ROWS = {"blocks": 0, "transactions": 0, "logs": 0}


def test_chain_entry_lags() -> None:
    entry = chain_entry(head=120, cursor=100, head_timestamp=1_700_000_048, cursor_timestamp=1_700_000_040,
                        reorgs=3, max_reorg_depth=4, hot_rows={"blocks": 101, "transactions": 9, "logs": 2})
    assert entry == {"head": 120, "cursor": 100, "lag_blocks": 20, "lag_seconds": 8.0, "reorgs": 3,
                     "max_reorg_depth": 4, "hot_rows": {"blocks": 101, "transactions": 9, "logs": 2}}


def test_chain_entry_without_cursor_or_timestamps() -> None:
    entry = chain_entry(head=5, cursor=None, head_timestamp=None, cursor_timestamp=None, reorgs=0,
                        max_reorg_depth=None, hot_rows=NO_ROWS)
    assert (entry["lag_blocks"], entry["lag_seconds"], entry["max_reorg_depth"]) == (None, None, 0)
    unreachable = chain_entry(head=None, cursor=7, head_timestamp=None, cursor_timestamp=1, reorgs=0,
                              max_reorg_depth=None, hot_rows=NO_ROWS)
    assert unreachable["head"] is None and unreachable["lag_blocks"] is None
    assert unreachable["lag_seconds"] is None


def test_assemble_status_is_one_json_object() -> None:
    doc = assemble_status(
        {"postgres": service_entry("postgresql://postgres@127.0.0.1:1/postgres", 10, True),
         "objects": service_entry("/x", None, None)},
        {10143: chain_entry(head=1, cursor=1, head_timestamp=2, cursor_timestamp=2, reorgs=0,
                            max_reorg_depth=None, hot_rows=NO_ROWS)},
    )
    assert json.loads(json.dumps(doc)) == doc
    assert list(doc) == ["services", "chains"]
    assert doc["services"]["postgres"] == {"url": "postgresql://postgres@127.0.0.1:1/postgres", "pid": 10,
                                           "healthy": True, "restarts": 0}
    assert doc["chains"]["10143"]["lag_blocks"] == 0


def _stack(tmp_path: Path, supervisor_pid: int, child_pid: int | None) -> StackPaths:
    paths = StackPaths.at(tmp_path)
    paths.create()
    write_json(paths.services_file, {"services": [{"name": "follower", "argv": ["x"], "ready_url": None},
                                                  {"name": "sink", "argv": ["y"]}]})
    write_pid(paths.pid_file("supervisor"), supervisor_pid)
    if child_pid is not None:
        write_pid(paths.pid_file("follower"), child_pid)
    write_json(paths.supervisor_file, {"pid": supervisor_pid, "services": {
        "follower": {"pid": child_pid, "state": "running", "restarts": 2},
        "sink": {"pid": None, "state": "backoff", "restarts": 5}}})
    return paths


def test_supervised_entries_from_state(tmp_path: Path) -> None:
    me = os.getpid()  # stands in for a live supervisor and child
    entries = supervised_entries(_stack(tmp_path, me, me))
    assert entries["supervisor"] == {"url": None, "pid": me, "healthy": True, "restarts": 0}
    assert entries["follower"] == {"url": None, "pid": me, "healthy": True, "restarts": 2, "state": "running"}
    assert entries["sink"] == {"url": None, "pid": None, "healthy": False, "restarts": 5, "state": "backoff"}


def test_supervised_entries_when_the_supervisor_is_gone(tmp_path: Path) -> None:
    paths = _stack(tmp_path, 2**22 + 12345, None)  # a pid that does not run
    entries = supervised_entries(paths)
    assert entries["supervisor"]["healthy"] is False and entries["supervisor"]["pid"] is None
    assert {n: e["healthy"] for n, e in entries.items()} == {"supervisor": False, "follower": False,
                                                             "sink": False}
    assert not paths.pid_file("supervisor").exists()  # the stale pid file is gone


def test_supervised_entries_without_any_stack(tmp_path: Path) -> None:
    assert supervised_entries(StackPaths.at(tmp_path)) == {
        "supervisor": {"url": None, "pid": None, "healthy": False, "restarts": 0}}
